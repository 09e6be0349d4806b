"""Opening a shell on a host from the TUI: which command to run, and which session it was.

The shell runs in the real terminal (the app suspends) through OpenSSH, so
everything ``ssh`` does (agent, keys, ``~.``) works as usual. Two ways, first
match wins:

1. ``GPUHOP_SSH_CONFIG`` names an OpenSSH config (``gpuhop demo`` writes one:
   ``DIR/ssh_config``): ``ssh -F CONFIG -t USER+HOST@GATEWAY_ALIAS``, the
   gateway's recorded direct form, with the gateway's alias from
   ``GPUHOP_SSH_GATEWAY`` (default ``gpuhop-gateway``).
2. ``gpuhop ssh HOST`` when this ``gpuhop`` has that command (login, keys and
   certificate handled there), run as ``python -m client.cli ssh HOST``.

GPUs and the environment reach the gateway as ``GPUHOP_GPUS``/``GPUHOP_ENV``
through OpenSSH's ``SetEnv``. ``gpuhop ssh`` gets them as its own ``--gpus`` /
``--env`` options when it has them, and otherwise as ``-oSetEnv=...`` after the
host, which it hands to ``ssh`` as is (OpenSSH reads options after the host
too); ``--`` goes first when click would otherwise parse that as its own option.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import click

from client.api.models import SessionView
from client.errors import ClientError

DEFAULT_GATEWAY_ALIAS = "gpuhop-gateway"
CLOCK_SKEW_S = 5.0


@dataclass(frozen=True)
class ShellRequest:
    host: str
    user: str
    gpus: int = 0
    env: str = ""


@dataclass(frozen=True)
class GpuhopSsh:
    """What this gpuhop's ``ssh`` command accepts (read from its click definition)."""

    options: frozenset[str] = frozenset()
    interspersed: bool = True
    """Whether click parses options after HOST (then ``--`` must protect ssh's)."""


@dataclass(frozen=True)
class ShellCommand:
    argv: tuple[str, ...]
    env: dict[str, str]
    """Variables to add to the child's environment."""


def ssh_shape(cli: click.Group) -> GpuhopSsh | None:
    """How ``cli``'s ``ssh`` command takes arguments (read from its click definition)."""
    command = cli.get_command(click.Context(cli), "ssh")
    if command is None:
        return None
    interspersed = command.context_settings.get("allow_interspersed_args", True)
    return GpuhopSsh(frozenset(str(p.name) for p in command.params), bool(interspersed))


def session_env(req: ShellRequest) -> dict[str, str]:
    out: dict[str, str] = {}
    if req.gpus > 0:
        out["GPUHOP_GPUS"] = str(req.gpus)
    if req.env:
        out["GPUHOP_ENV"] = req.env
    return out


def shell_command(
    req: ShellRequest, environ: Mapping[str, str], *, gpuhop_ssh: GpuhopSsh | None
) -> ShellCommand:
    """The command that opens ``req``'s shell; ``ClientError`` when there is no way.

    ``gpuhop_ssh`` describes this gpuhop's ``ssh`` command (None: there is none)."""
    extra = session_env(req)
    setenv = "-oSetEnv=" + " ".join(f"{k}={v}" for k, v in extra.items())
    config = environ.get("GPUHOP_SSH_CONFIG", "").strip()
    if config:
        alias = environ.get("GPUHOP_SSH_GATEWAY", "").strip() or DEFAULT_GATEWAY_ALIAS
        argv = [environ.get("GPUHOP_SSH", "").strip() or "ssh", "-F", config, "-t"]
        if extra:
            argv.append(setenv)
        argv.append(f"{req.user}+{req.host}@{alias}")
        return ShellCommand(tuple(argv), {})
    if gpuhop_ssh is not None:
        argv = [sys.executable, "-m", "client.cli", "ssh"]
        if {"gpus", "env"} <= gpuhop_ssh.options:
            argv += [f"--gpus={req.gpus}"] + ([f"--env={req.env}"] if req.env else [])
            return ShellCommand((*argv, req.host), {})
        argv.append(req.host)
        if extra:
            argv += ["--", setenv] if gpuhop_ssh.interspersed else [setenv]
        return ShellCommand(tuple(argv), {})
    raise ClientError(
        "cannot open a shell: this gpuhop has no `ssh` command; "
        "set GPUHOP_SSH_CONFIG to an OpenSSH config (e.g. the demo's DIR/ssh_config)"
    )


def pick_session(sessions: Iterable[SessionView], host: str, since: float) -> SessionView | None:
    """The newest session on ``host`` that started after the shell was launched."""
    candidates = [s for s in sessions if s.host == host and s.started_at >= since - CLOCK_SKEW_S]
    return max(candidates, key=lambda s: s.started_at, default=None)
