"""The gateway's own SSH connections to hosts, for recorded sessions.

Each connection verifies the host's pinned key from the inventory (a
mismatch is refused, never trusted on first use) and logs in with a
short-lived certificate from the gateway's *upstream* CA, a CA of its own that
signs nothing for users, whose one principal ``ACCOUNT@HOST`` opens that
account on that host only and whose key id names the gpuhop user, so the
host's own logs say who it was. Connections are kept and
reused for the same (user, host, account) while they have channels, and for
``idle_s`` after, because a fresh key exchange to a far region is the most
expensive part of opening a session.

A session that relays the user's agent (``ssh -A``) gets a connection of its
own (:meth:`UpstreamPool.acquire_private`), never a pooled one: every session
on an agent-forwarding connection asks the host for the agent, so sharing it
would hand one session's agent to another. It is closed when released.

Receive windows are sized from the round trip measured when the connection
was made (the bandwidth-delay product), so a download from a host 120 ms away
is not capped by a 2 MiB window.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncssh
import structlog

from gateway.adapters.hosts.algorithms import connection_algorithms
from gateway.adapters.keys import KeyRing, host_trust
from gateway.domain.models import Host
from gateway.domain.policy.passthrough import host_principal
from gateway.errors import KeyMaterialError, UpstreamError

log = structlog.get_logger("gpuhop.upstream")

MIN_WINDOW = 2 * 1024 * 1024
MAX_WINDOW = 128 * 1024 * 1024
CERT_VALIDITY_S = 600


class HostKeyMismatch(UpstreamError):
    """The host presented a key other than the pinned one."""


def window_for_rtt(rtt_s: float, target_rate: int) -> int:
    """Bandwidth-delay product, clamped: the window a far host needs to stream."""
    return int(min(MAX_WINDOW, max(MIN_WINDOW, rtt_s * target_rate * 1.25)))


@dataclass
class _Entry:
    key: tuple[str, str, str]
    conn: asyncssh.SSHClientConnection
    rtt_s: float
    window: int
    users: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    private: bool = False  # one session's own (agent forwarding): closed on release


class UpstreamPool:
    def __init__(
        self,
        keys: Callable[[], KeyRing],
        *,
        target_rate: int = 256_000_000,
        max_packet: int = 256 * 1024,
        keepalive_s: float = 5.0,
        idle_s: float = 60.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._keys = keys  # the runtime's, read at each login: a reload reaches the next one
        self._target_rate = target_rate
        self._max_packet = max_packet
        self._keepalive_s = keepalive_s
        self._idle_s = idle_s
        self._timeout = connect_timeout_s
        self._entries: dict[tuple[str, str, str], _Entry] = {}
        self._connecting: dict[tuple[str, str, str], asyncio.Future[_Entry]] = {}
        self._reaper: asyncio.Task[None] | None = None

    async def acquire(self, user: str, host: Host, account: str) -> _Entry:
        """A live connection for (user, host, account); call :meth:`release` when done."""
        key = (user, host.name, account)
        entry = self._entries.get(key)
        if entry is not None and not entry.conn.is_closed():
            entry.users += 1
            return entry
        pending = self._connecting.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._connecting[key] = pending
            try:
                entry = await self._connect(key, user, host, account)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: waiters re-raise it themselves
                raise
            finally:
                self._connecting.pop(key, None)
            self._entries[key] = entry
            pending.set_result(entry)
        else:
            entry = await asyncio.shield(pending)
        entry.users += 1
        self._ensure_reaper()
        return entry

    async def connect_extra(
        self, user: str, host: Host, account: str
    ) -> asyncssh.SSHClientConnection:
        """A fresh connection outside the pool, as trusted as a pooled one; the caller closes it.

        For bulk transfers that want several TCP connections to a far host (one
        connection's channels share one congestion window and the host's
        ``MaxSessions``) without crowding the pooled connection interactive
        sessions use.
        """
        entry = await self._connect((user, host.name, account), user, host, account)
        return entry.conn

    async def acquire_private(
        self, user: str, host: Host, account: str, *, agent_path: str
    ) -> _Entry:
        """A connection for one session only, forwarding the host's agent requests to
        ``agent_path`` (the session's relay to the user's agent); :meth:`release` closes it."""
        entry = await self._connect((user, host.name, account), user, host, account, agent_path)
        entry.private = True
        entry.users = 1
        return entry

    def release(self, entry: _Entry) -> None:
        if entry.private:
            entry.users = 0
            entry.conn.close()
            return
        entry.users = max(0, entry.users - 1)
        if entry.users == 0:
            entry.idle_since = time.monotonic()
            if self._idle_s <= 0:
                self._drop(entry)

    def _drop(self, entry: _Entry) -> None:
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
        entry.conn.close()

    async def _connect(
        self,
        key: tuple[str, str, str],
        user: str,
        host: Host,
        account: str,
        agent_path: str | None = None,
    ) -> _Entry:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        started = time.monotonic()
        try:
            await asyncio.wait_for(
                loop.sock_connect(sock, (host.address, host.port)), self._timeout
            )
        except (OSError, TimeoutError) as exc:
            sock.close()
            raise UpstreamError(f"{host.name} unreachable: {exc or 'timed out'}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        keys = self._keys()
        issued = keys.upstream_ca.sign(  # never the user CA: see the module docstring
            keys.upstream_key,
            user=user,
            accounts=[host_principal(account, host.name)],
            validity_s=CERT_VALIDITY_S,
            permit_agent_forwarding=agent_path is not None,  # the host checks it for ssh -A
        )
        try:
            trust = host_trust(host)
        except KeyMaterialError as exc:
            sock.close()
            raise UpstreamError(str(exc)) from exc
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(
                    sock=sock,
                    host=host.name,
                    username=account,
                    client_keys=[(keys.upstream_key, issued.cert)],
                    known_hosts=trust,
                    agent_path=None,  # never the user's agent for the gateway's own login
                    agent_forwarding=agent_path or False,
                    config=None,
                    keepalive_interval=self._keepalive_s,
                    keepalive_count_max=3,
                    max_pktsize=self._max_packet,
                    encoding=None,
                    **connection_algorithms(),
                ),
                self._timeout * 2,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            sock.close()
            what = "the pinned key" if host.host_key else "a certificate from its host CA"
            raise HostKeyMismatch(
                f"host key of {host.name} does not match {what}; refusing"
            ) from exc
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            sock.close()
            reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
            raise UpstreamError(f"{host.name}: cannot log in as {account}: {reason}") from exc
        # A certificate login with asyncssh takes about six round trips (banner, kex,
        # newkeys, service request, auth); the TCP connect adds one on a real network.
        rtt = max(0.0, time.monotonic() - started) / 6
        window = window_for_rtt(rtt, self._target_rate)
        log.debug("upstream connected", host=host.name, user=user, rtt_ms=round(rtt * 1e3, 1))
        return _Entry(key, conn, rtt, window)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        while self._entries:
            await asyncio.sleep(min(5.0, max(0.5, self._idle_s / 4)))
            now = time.monotonic()
            for entry in list(self._entries.values()):
                if entry.conn.is_closed() or (
                    entry.users == 0 and now - entry.idle_since >= self._idle_s
                ):
                    self._drop(entry)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for entry in list(self._entries.values()):
            self._drop(entry)
