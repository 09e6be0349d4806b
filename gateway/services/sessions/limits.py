"""Bounds on what one client can make the gateway hold: connections, channels, requests.

- :class:`StartupLimiter`: unauthenticated connections, all together and per
  source address (OpenSSH's MaxStartups, without the random early drop). A
  connection holds a :class:`Startup` from accept until it authenticates or
  closes; asyncssh's ``login_timeout`` is the grace time.
- :func:`channel_refusal`: channels open at once on one connection.
- :func:`limit_env`: environment variables per session channel. asyncssh keeps
  every ``env`` request in a dict with no bound and no hook, so the channel's
  handler is wrapped here (the one place that knows asyncssh's internals;
  tests/integration/test_attack_limits.py exercises it). Past the limit the
  channel fails closed: its shell/exec/subsystem is refused, since a dropped
  ``GPUHOP_DATA`` would skip a residency check.
- :class:`ResizeThrottle`: window changes relayed per second; faster ones are
  coalesced into the latest size, so the terminal still ends up right.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from gateway.adapters.sshcompat import gate_session, open_channel_count


class Startup:
    """One unauthenticated connection's place; ``done`` (idempotent) frees it."""

    __slots__ = ("_address", "_limiter")

    def __init__(self, limiter: StartupLimiter, address: str) -> None:
        self._limiter: StartupLimiter | None = limiter
        self._address = address

    def done(self) -> None:
        if self._limiter is not None:
            self._limiter._release(self._address)
            self._limiter = None


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a connection gets no place; ``limit`` ("total" or "per_source") groups refusals."""

    reason: str
    limit: str


class StartupLimiter:
    """Counts unauthenticated connections; refuses past ``total`` or ``per_source``.

    >>> lim = StartupLimiter(total=2, per_source=1)
    >>> a = lim.admit("10.0.0.1")
    >>> lim.admit("10.0.0.1").reason
    'too many unauthenticated connections from 10.0.0.1 (limit 1); try again later'
    >>> a.done(); isinstance(lim.admit("10.0.0.1"), Startup)
    True
    """

    def __init__(self, total: int, per_source: int, max_lingering: int = 64) -> None:
        self.total = total
        self.per_source = per_source
        self.max_lingering = max_lingering
        self.lingering = 0  # refused connections left open briefly for their reason
        self._open = 0
        self._by_source: dict[str, int] = {}  # at most ``total`` entries

    @property
    def open(self) -> int:
        return self._open

    def admit(self, address: str) -> Startup | Refused:
        """A place for a new connection from ``address``, or why there is none."""
        if self._open >= self.total:
            return Refused(
                f"too many unauthenticated connections to the gateway (limit {self.total}); "
                "try again later",
                "total",
            )
        held = self._by_source.get(address, 0)
        if held >= self.per_source:
            return Refused(
                f"too many unauthenticated connections from {address} "
                f"(limit {self.per_source}); try again later",
                "per_source",
            )
        self._open += 1
        self._by_source[address] = held + 1
        return Startup(self, address)

    def begin_linger(self) -> bool:
        """May one more refused connection stay open a moment? (bounded: else close now)"""
        if self.lingering >= self.max_lingering:
            return False
        self.lingering += 1
        return True

    def end_linger(self) -> None:
        self.lingering -= 1

    def _release(self, address: str) -> None:
        self._open -= 1
        left = self._by_source.get(address, 1) - 1
        if left > 0:
            self._by_source[address] = left
        else:
            self._by_source.pop(address, None)


DISC_TOO_MANY_CONNECTIONS = 12  # RFC 4253 11.1
MAX_ENV_BYTES = 64 * 1024  # names and values together, per session channel


def _ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def turn_away_bytes(version: bytes, reason: str) -> bytes:
    """What a refused connection is sent before it is closed, none of it from asyncssh:
    the reason as a line (for people and ``nc``), the version string, and an
    unencrypted SSH_MSG_DISCONNECT carrying the reason, which OpenSSH prints as
    ``Received disconnect from ...: 12: <reason>`` and other clients raise."""
    payload = (
        b"\x01"
        + DISC_TOO_MANY_CONNECTIONS.to_bytes(4, "big")
        + _ssh_string(reason.encode())
        + _ssh_string(b"")
    )
    pad = 8 - (5 + len(payload)) % 8
    pad += 8 if pad < 4 else 0
    packet = (1 + len(payload) + pad).to_bytes(4, "big") + bytes([pad]) + payload + bytes(pad)
    return f"gpuhop: {reason}\r\n".encode() + b"SSH-2.0-" + version + b"\r\n" + packet


def channel_refusal(conn: asyncssh.SSHServerConnection | None, limit: int) -> str:
    """Why a new channel on ``conn`` is refused ("" if it is not)."""
    if conn is not None and open_channel_count(conn) >= limit:
        return f"too many channels open on this connection (limit {limit})"
    return ""


def limit_env(
    chan: asyncssh.SSHServerChannel[Any], limit: int, refused: Callable[[str], None]
) -> None:
    """Accept at most ``limit`` env requests (``MAX_ENV_BYTES`` in all) on ``chan``;
    past either, refuse the session.

    ``refused(reason)`` is called once, when the limit is first passed.
    """
    state = {"count": 0, "bytes": 0, "refused": 0}
    reason = (
        f"too many environment variables on this channel "
        f"(limit {limit}, {MAX_ENV_BYTES // 1024} KiB)"
    )

    def admit_env(size: int) -> bool:
        state["count"] += 1
        state["bytes"] += size
        if state["count"] <= limit and state["bytes"] <= MAX_ENV_BYTES:
            return True
        if not state["refused"]:
            state["refused"] = 1
            refused(reason)
        return False

    def admit_start() -> bool:
        if not state["refused"]:
            return True
        with contextlib.suppress(OSError, asyncssh.Error):
            chan.write_stderr(f"gpuhop: session refused: {reason}\r\n".encode())
        asyncio.get_running_loop().call_soon(chan.close)
        return False

    gate_session(chan, admit_env, admit_start)


class ResizeThrottle:
    """Pass at most ``per_s`` sizes a second to ``apply``; hold the latest of the rest."""

    def __init__(
        self,
        apply: Callable[[int, int, int, int], None],
        per_s: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._apply = apply
        self._per_s = per_s
        self._clock = clock
        self._second = -1.0
        self._spent = 0
        self._latest: tuple[int, int, int, int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.coalesced = 0

    def offer(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        now = self._clock()
        if now - self._second >= 1.0:
            self._second, self._spent = now, 0
        if self._spent < self._per_s and self._timer is None:
            self._spent += 1
            self._apply(width, height, pixwidth, pixheight)
            return
        self.coalesced += 1
        self._latest = (width, height, pixwidth, pixheight)
        if self._timer is None:
            delay = max(0.0, self._second + 1.0 - now)
            self._timer = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        latest, self._latest = self._latest, None
        self._second, self._spent = self._clock(), 0
        if latest is not None:
            self._spent = 1
            with contextlib.suppress(OSError, asyncssh.Error):
                self._apply(*latest)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
