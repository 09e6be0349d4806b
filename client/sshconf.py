"""OpenSSH client configuration for the gateway and every host behind it.

``config_text`` writes one ``Host`` block for the gateway and one per inventory
host (``ProxyJump`` through the gateway, the gpuhop key and certificate, and a
known_hosts file holding the gateway's key, each host's pinned key and the
``@cert-authority`` line for recorded jumps), so that plain ``ssh sg-a100-1``,
``scp``, ``rsync`` and VS Code Remote-SSH work. Keepalives (5 s x 3) make a
dead link show within about 15 s.

``install`` keeps the block in a file gpuhop owns and puts one ``Include`` of
it at the top of ``~/.ssh/config``: OpenSSH takes the first value it reads for
most keywords, so a ``Host *`` block *above* the Include would win over what
gpuhop writes. ``overriding_blocks`` finds such blocks so the CLI can warn.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from client.errors import ClientError
from client.identity import Paths, Profile, write_private

GATEWAY_ALIAS = "gpuhop-gateway"
MARK = "# gpuhop: managed by `gpuhop ssh-config --install`"

# Keywords gpuhop sets whose first value wins (IdentityFile and CertificateFile add up
# instead, so an earlier one does not hide ours).
SINGLE_VALUED = frozenset(
    {
        "hostname",
        "port",
        "user",
        "proxyjump",
        "proxycommand",
        "userknownhostsfile",
        "stricthostkeychecking",
        "identitiesonly",
        "serveraliveinterval",
        "serveralivecountmax",
        "hostkeyalias",
        "connecttimeout",
    }
)
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._:@%+/~-]+$")


@dataclass(frozen=True)
class HostEntry:
    """One inventory host as the ssh config names it."""

    name: str
    account: str


def config_text(
    profile: Profile,
    paths: Paths,
    hosts: Iterable[HostEntry],
    *,
    connect_timeout_s: float = 10,
    keepalive_s: float = 5,
    keepalive_count: int = 3,
) -> str:
    """The whole managed config: the gateway, then one block per host.

    Keepalives default to 5 s x 3 (GPUHOP_KEEPALIVE_S / GPUHOP_KEEPALIVE_COUNT).
    """
    common = [
        f"IdentityFile {_path(paths.key)}",
        f"CertificateFile {_path(paths.cert)}",
        "IdentitiesOnly yes",
        f"UserKnownHostsFile {_path(paths.known_hosts)}",
        "StrictHostKeyChecking yes",
        "UpdateHostKeys no",
        f"ConnectTimeout {max(1, round(connect_timeout_s))}",
        f"ServerAliveInterval {max(1, round(keepalive_s))}",
        f"ServerAliveCountMax {keepalive_count}",
    ]
    lines = [
        MARK,
        f"# gateway {profile.url} as {profile.user}",
        "",
        f"Host {GATEWAY_ALIAS}",
        f"  HostName {_value(profile.ssh_host)}",
        f"  Port {profile.ssh_port}",
        f"  User {_value(profile.user)}",
        *(f"  {line}" for line in common),
    ]
    for host in hosts:
        lines += [
            "",
            f"Host {_value(host.name)}",
            f"  ProxyJump {GATEWAY_ALIAS}",
            f"  User {_value(host.account)}",
            *(f"  {line}" for line in common),
        ]
    return "\n".join(lines) + "\n"


def write_config(paths: Paths, text: str) -> Path:
    write_private(paths.ssh_config, text, mode=0o600)
    return paths.ssh_config


def user_config_path() -> Path:
    return Path(os.path.expanduser("~")) / ".ssh" / "config"


def include_line(managed: Path) -> str:
    return f"Include {_path(managed)}"


def install(managed: Path, user_config: Path | None = None) -> tuple[Path, bool]:
    """Make ``user_config`` include ``managed`` (at its top); return (path, changed)."""
    config = user_config or user_config_path()
    line = include_line(managed)
    try:
        text = config.read_text() if config.exists() else ""
    except OSError as exc:
        raise ClientError(f"cannot read {config}: {exc.strerror}") from None
    if _include_index(text.splitlines(), managed) is not None:
        return config, False
    try:
        config.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ClientError(f"cannot create {config.parent}: {exc.strerror}") from None
    block = f"{MARK}\n{line}\n\n"
    mode = (config.stat().st_mode & 0o777) if config.exists() else 0o600
    write_private(config, block + text, mode=mode)
    return config, True


def overriding_blocks(text: str, managed: Path | None) -> list[tuple[int, list[str]]]:
    """``Host *`` / ``Match all`` blocks that come before the Include of ``managed`` and set
    keywords gpuhop sets: (line number, keywords). With ``managed`` None, every such block
    counts (the printed config would go at the end)."""
    lines = text.splitlines()
    stop = _include_index(lines, managed) if managed is not None else None
    limit = len(lines) if stop is None else stop
    found: list[tuple[int, list[str]]] = []
    current: tuple[int, list[str]] | None = None
    for number, raw in enumerate(lines[:limit], start=1):
        words = _words(raw)
        if not words:
            continue
        keyword = words[0].lower()
        if keyword in ("host", "match"):
            if current is not None and current[1]:
                found.append(current)
            wildcard = (keyword == "host" and "*" in words[1:]) or (
                keyword == "match" and [w.lower() for w in words[1:]] == ["all"]
            )
            current = (number, []) if wildcard else None
        elif current is not None and keyword in SINGLE_VALUED and keyword not in current[1]:
            current[1].append(keyword)
    if current is not None and current[1]:
        found.append(current)
    return found


def warning_for(config: Path, managed: Path | None) -> str | None:
    """One line saying which ``Host *`` block would override gpuhop's, or None."""
    try:
        text = config.read_text()
    except OSError:
        return None
    blocks = overriding_blocks(text, managed)
    if not blocks:
        return None
    number, keywords = blocks[0]
    where = "before the gpuhop Include" if managed is not None else "in it"
    return (
        f"warning: {config}:{number}: a `Host *` block {where} sets "
        f"{', '.join(sorted(keywords))}, which override gpuhop's settings; "
        "move it below the gpuhop block"
    )


def _include_index(lines: Sequence[str], managed: Path | None) -> int | None:
    if managed is None:
        return None
    targets = {str(managed), _path(managed)}
    for index, raw in enumerate(lines):
        words = _words(raw)
        if len(words) >= 2 and words[0].lower() == "include":
            expanded = {os.path.expanduser(w.strip('"')) for w in words[1:]}
            if expanded & {os.path.expanduser(t) for t in targets}:
                return index
    return None


def _words(raw: str) -> list[str]:
    line = raw.split("#", 1)[0].strip()
    if not line:
        return []
    key, _, rest = line.replace("=", " ", 1).partition(" ")
    return [key, *rest.split()]


def _path(path: Path) -> str:
    """An absolute path as ssh_config wants it (quoted if it has spaces).

    Never ``~/``: ssh expands ``~`` from the password database, not ``$HOME``.
    """
    text = str(path.absolute())
    return f'"{text}"' if " " in text else text


def _value(value: str) -> str:
    if not _SAFE_VALUE.match(value):
        raise ClientError(f"refusing to write {value!r} into an ssh config")
    return value
