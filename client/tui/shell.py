"""Opening a shell on a host from the TUI: which command to run, and which session it was.

The shell runs in the real terminal (the app suspends) through OpenSSH, so
everything ``ssh`` does (agent, keys, ``~.``) works as usual. Two ways, first
match wins:

1. ``GPUHOP_SSH_CONFIG`` names an OpenSSH config (``gpuhop demo`` writes one:
   ``DIR/ssh_config``): ``ssh -F CONFIG -t USER+HOST@GATEWAY_ALIAS``, the
   gateway's recorded direct form, with the gateway's alias from
   ``GPUHOP_SSH_GATEWAY`` (default ``gpuhop-gateway``).
2. ``gpuhop ssh --gpus N --env GPUHOP_ENV=NAME HOST`` otherwise (login, keys and
   certificate handled there), run as ``python -m client.cli ssh ...``.

GPUs and the environment reach the gateway as ``GPUHOP_GPUS``/``GPUHOP_ENV``
through OpenSSH's ``SetEnv``: ``-oSetEnv=...`` in the first form, ``gpuhop ssh``'s
own ``--gpus``/``--env`` options in the second.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from client.api.models import SessionView

DEFAULT_GATEWAY_ALIAS = "gpuhop-gateway"
CLOCK_SKEW_S = 5.0


@dataclass(frozen=True)
class ShellRequest:
    host: str
    user: str
    gpus: int = 0
    env: str = ""


@dataclass(frozen=True)
class ShellCommand:
    argv: tuple[str, ...]
    env: dict[str, str]
    """Variables to add to the child's environment."""


def session_env(req: ShellRequest) -> dict[str, str]:
    out: dict[str, str] = {}
    if req.gpus > 0:
        out["GPUHOP_GPUS"] = str(req.gpus)
    if req.env:
        out["GPUHOP_ENV"] = req.env
    return out


def shell_command(req: ShellRequest, environ: Mapping[str, str]) -> ShellCommand:
    """The command that opens ``req``'s shell."""
    extra = session_env(req)
    config = environ.get("GPUHOP_SSH_CONFIG", "").strip()
    if config:
        alias = environ.get("GPUHOP_SSH_GATEWAY", "").strip() or DEFAULT_GATEWAY_ALIAS
        argv = [environ.get("GPUHOP_SSH", "").strip() or "ssh", "-F", config, "-t"]
        if extra:
            argv.append("-oSetEnv=" + " ".join(f"{k}={v}" for k, v in extra.items()))
        argv.append(f"{req.user}+{req.host}@{alias}")
        return ShellCommand(tuple(argv), {})
    argv = [sys.executable, "-m", "client.cli", "ssh", f"--gpus={req.gpus}"]
    if req.env:
        argv.append(f"--env=GPUHOP_ENV={req.env}")
    return ShellCommand((*argv, req.host), {})


def pick_session(sessions: Iterable[SessionView], host: str, since: float) -> SessionView | None:
    """The newest session on ``host`` that started after the shell was launched."""
    candidates = [s for s in sessions if s.host == host and s.started_at >= since - CLOCK_SKEW_S]
    return max(candidates, key=lambda s: s.started_at, default=None)
