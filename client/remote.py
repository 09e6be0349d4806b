"""The host side of ``gpuhop run``: small POSIX ``sh`` scripts, sent as exec commands.

Every run lives in ``~/.cache/gpuhop/runs/<id>/`` on the host (``/tmp`` when
the account has no HOME): ``job.sh`` (:data:`JOB_SCRIPT`, sent with the files),
``work/`` (the work directory), and while the command runs ``pgid`` (its
process group) and, once it is being stopped, ``cancel``. The directory is
removed when the job ends. Hosts need ``sh``, ``tar``, ``setsid``, and a
``sleep`` that takes fractions of a second (GNU coreutils or busybox).

``kill -TERM -$p`` rather than ``kill -TERM -- -$p``: dash's built-in kill
takes no ``--``.
"""

from __future__ import annotations

import shlex

_RUN_DIR = 'r="${HOME:-/tmp}/.cache/gpuhop/runs/$1"'
JOB_FILE = "job.sh"

SEND_SCRIPT = f"""{_RUN_DIR}
mkdir -p "${{r%/*}}" && mkdir -m 700 "$r" || exit 86
tar -x -f - -C "$r" || exit 87
"""

# The job channel's own command is short (it is what the audit log and the host's
# process table show, the user's command last); the wrapper arrives with the files.
JOB_START = f"""{_RUN_DIR}
IFS= read -r go && [ "$go" = go ] && exec sh "$r/{JOB_FILE}" "$@"
rm -rf "$r"; exit 86
"""

JOB_SCRIPT = f"""{_RUN_DIR}; shift
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do export "$1"; shift; done; shift
cd "$r/work" || exit 86
exec 3<&0 </dev/null 4>&2 2>/dev/null
(
  cat <&3
  true 2>/dev/null >"$r/cancel"
  i=0; while [ ! -s "$r/pgid" ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done
  p=$(cat "$r/pgid") && [ -n "$p" ] || exit 0
  kill -TERM -$p || exit 0
  i=0; while kill -0 -$p && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL -$p
) >/dev/null 2>&1 4>&- &
w=$!
setsid sh -c 'exec 2>&4 4>&-; echo $$ >"$0/pgid"; [ -e "$0/cancel" ] && exit 143; exec "$@"' \\
  "$r" "$@" 3<&-
s=$?
kill $w 2>/dev/null
p=$(cat "$r/pgid" 2>/dev/null) && [ -n "$p" ] && kill -KILL -$p 2>/dev/null
rm -rf "$r"
exit $s
"""

KILL_SCRIPT = f"""{_RUN_DIR}
true 2>/dev/null >"$r/cancel"
p=$(cat "$r/pgid" 2>/dev/null) && [ -n "$p" ] && kill -TERM -$p 2>/dev/null
exit 0
"""

HEARTBEAT_SCRIPT = f"""{_RUN_DIR}
while [ -d "$r" ]; do echo; sleep "$2"; done
"""


def script_command(script: str, *args: str) -> str:
    """The exec line that runs ``script`` with ``args`` as $1... (the login shell parses it).

    >>> script_command("echo $1", "a b")
    "sh -c 'echo $1' gpuhop 'a b'"
    """
    return shlex.join(["sh", "-c", script, "gpuhop", *args])
