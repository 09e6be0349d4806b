"""The client's settings, read once from the environment at the edge (the CLI).

Every value has a default that works on a laptop; CI runners and slow links
override them with ``GPUHOP_*`` variables::

    GPUHOP_GATEWAY=https://gw.example:8080  GPUHOP_TOKEN=gph_...   # no keyring needed
    GPUHOP_KEEPALIVE_S=5  GPUHOP_KEEPALIVE_COUNT=3                 # SSH keepalives
    GPUHOP_LOST_AFTER_S=12                                         # gpuhop run: host silent
    GPUHOP_CONNECT_TIMEOUT_S=10  GPUHOP_HTTP_TIMEOUT_S=15
    GPUHOP_DATA_DIR=...   # key, certificate, known_hosts (default: the user data dir)

This is a frozen dataclass filled from ``os.environ`` rather than a
pydantic-settings model on purpose: ``gpuhop run -- true`` is measured against
plain ``ssh``, and importing pydantic costs more than the whole SSH handshake.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from client import durations
from client.errors import UsageError

APP = "gpuhop"
KEYRING_SERVICE = "gpuhop"


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


@dataclass(frozen=True)
class ClientSettings:
    """What every command needs to know about the environment it runs in."""

    data_dir: Path
    """Key, certificate, known_hosts, the managed ssh config and the gateway profile."""
    gateway_url: str | None = None
    """GPUHOP_GATEWAY: the API's base URL; with GPUHOP_TOKEN it replaces the stored login."""
    token: Secret | None = None
    """GPUHOP_TOKEN: a ``gph_...`` API token (a ``ci`` token on runners)."""
    keepalive_interval_s: float = 5.0
    """SSH keepalive interval to the gateway."""
    keepalive_count_max: int = 3
    """Unanswered keepalives before the link counts as dead (5 s x 3: noticed in 15-20 s)."""
    heartbeat_s: float = 3.0
    """How often a running job's host says it is alive (``gpuhop run``)."""
    lost_after_s: float = 12.0
    """A job whose host has been silent this long is given up as lost (exit 75)."""
    connect_timeout_s: float = 10.0
    """SSH connection and login to the gateway."""
    http_timeout_s: float = 15.0
    """Each API request."""
    renew_before_s: float = 600.0
    """Certificates with less than this left are renewed before use."""
    ssh_binary: str = "ssh"
    """The OpenSSH client ``gpuhop ssh`` runs (GPUHOP_SSH)."""


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def load_settings(environ: Mapping[str, str] | None = None) -> ClientSettings:
    """Settings from ``environ`` (default ``os.environ``); a bad value is a UsageError."""
    env = os.environ if environ is None else environ
    data_dir = env.get("GPUHOP_DATA_DIR")
    token = env.get("GPUHOP_TOKEN", "").strip()
    url = env.get("GPUHOP_GATEWAY", "").strip()
    return ClientSettings(
        data_dir=Path(data_dir).expanduser() if data_dir else default_data_dir(),
        gateway_url=normalize_url(url) if url else None,
        token=Secret(token) if token else None,
        keepalive_interval_s=_seconds(env, "GPUHOP_KEEPALIVE_S", 5.0, minimum=1.0),
        keepalive_count_max=int(_seconds(env, "GPUHOP_KEEPALIVE_COUNT", 3, minimum=1)),
        lost_after_s=_seconds(env, "GPUHOP_LOST_AFTER_S", 12.0, minimum=3.0),
        connect_timeout_s=_seconds(env, "GPUHOP_CONNECT_TIMEOUT_S", 10.0, minimum=1.0),
        http_timeout_s=_seconds(env, "GPUHOP_HTTP_TIMEOUT_S", 15.0, minimum=1.0),
        ssh_binary=env.get("GPUHOP_SSH", "ssh") or "ssh",
    )


def _seconds(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse_duration(raw)
    except UsageError:
        raise UsageError(f"{name}={raw!r}: expected seconds or a duration like 30s") from None
    if value < minimum:
        raise UsageError(f"{name}={raw!r}: at least {minimum:g} s")
    return value


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (grammar: :mod:`client.durations`); a UsageError if it is not one."""
    try:
        return durations.parse_duration(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def normalize_url(url: str) -> str:
    """The API base URL without a trailing slash; the scheme must be spelled out."""
    url = url.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest:
        raise UsageError(f"gateway URL must start with https:// or http://, not {url!r}")
    return url


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` names this machine (plain http is acceptable only there)."""
    host = url.partition("://")[2].split("/", 1)[0].rsplit("@", 1)[-1]
    host = host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0]
    return host in ("localhost", "::1") or host.startswith("127.")
