"""Live host probes over SSH: round-trip time, TCP connect time and GPU inventory.

The adapter half of probing (it speaks SSH through asyncssh); the loop, its
state and its statistics are in ``hostprobe`` and ``latency``, re-exported
here. ``SshHostLink`` keeps one SSH connection to a host open for the probe:
it pins the host key from the inventory (no known_hosts file, no agent, no
``~/.ssh/config``), offers only ``gateway.adapters.hosts.algorithms``, logs in with the
key (and certificate) in ``ProbeCredentials``, and reconnects after a drop.
The first round trip after each login is made but not counted: it also waits
for sshd to finish setting the session up (about 45 ms on loopback).

    link = SshHostLink(host, ProbeCredentials("root", key, cert))
    probe = HostProbe(host.name, link)
    task = asyncio.create_task(probe.run())
    ...
    probe.status()  # HostStatus: up/down, last/median/p95 RTT, history, GPUs
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncssh

from gateway.adapters.hosts.algorithms import connection_algorithms
from gateway.adapters.hosts.hostprobe import HostProbe, HostStatus
from gateway.adapters.keys import host_trust
from gateway.adapters.sshcompat import global_request
from gateway.domain.inventory.gpus import NVIDIA_SMI_COMMAND, GpuInventory, parse_gpu_query
from gateway.domain.models import Host
from gateway.errors import KeyMaterialError, UpstreamError
from gateway.ports import HostLink

__all__ = [
    "HostLink",
    "HostProbe",
    "HostStatus",
    "ProbeCredentials",
    "SshHostLink",
    "connect_host",
    "query_gpus",
    "ssh_rtt_ms",
    "tcp_connect_ms",
]

# The message OpenSSH's ServerAliveInterval sends; servers answer it at once.
KEEPALIVE_REQUEST = b"keepalive@openssh.com"


@dataclass(frozen=True, slots=True)
class ProbeCredentials:
    """How the prober logs in: remote account, private key, optional certificate for it."""

    username: str
    client_key: asyncssh.SSHKey
    certificate: asyncssh.SSHCertificate | None = None
    # Or one per host: certificates whose principal names the host (ACCOUNT@HOST).
    certificate_for: Callable[[str], asyncssh.SSHCertificate] | None = None


async def _open_socket(address: str, port: int, timeout_s: float) -> tuple[socket.socket, float]:
    """A connected TCP socket and the milliseconds connect() took (name lookup excluded)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(address, port, type=socket.SOCK_STREAM)
            last: OSError = OSError(f"{address} has no address")
            for family, kind, proto, _, sockaddr in infos:
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                start = time.perf_counter()
                try:
                    await loop.sock_connect(sock, sockaddr)
                except OSError as exc:
                    sock.close()
                    last = exc
                    continue
                except BaseException:
                    sock.close()
                    raise
                elapsed_ms = (time.perf_counter() - start) * 1000
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock, elapsed_ms
            raise last
    except TimeoutError:
        raise UpstreamError(
            f"TCP connect to {address}:{port}: no answer in {timeout_s:g} s"
        ) from None
    except OSError as exc:
        raise UpstreamError(f"TCP connect to {address}:{port}: {exc.strerror or exc}") from None


async def tcp_connect_ms(address: str, port: int, timeout_s: float = 5.0) -> float:
    """Milliseconds for a TCP handshake to ``address:port`` (raises ``UpstreamError``).

    The connection is closed at once. Note that a userspace proxy in front of
    a host answers the handshake itself, so this measures the way to the
    proxy; ``ssh_rtt_ms`` measures the way to sshd.
    """
    sock, elapsed_ms = await _open_socket(address, port, timeout_s)
    sock.close()
    return elapsed_ms


async def ssh_rtt_ms(conn: asyncssh.SSHClientConnection) -> float:
    """Milliseconds for one SSH-level round trip on an open connection.

    Method: one ``keepalive@openssh.com`` global request with want-reply, the
    message OpenSSH's ``ServerAliveInterval`` sends. sshd answers it straight
    from its packet loop (``REQUEST_FAILURE``: it has no handler for the name,
    which is the point), with no channel, process or disk involved, so the time
    is the network round trip plus a few microseconds of packet handling at
    each end. Both answers count; only a lost connection does not.

    asyncssh has no public call for a single global request, so this uses
    :func:`gateway.adapters.sshcompat.global_request`. asyncssh answers pending requests
    with a failure when the connection drops, hence the closed-check afterwards.

    >>> rtt = await ssh_rtt_ms(conn)  # doctest: +SKIP
    """
    if conn.is_closed():
        raise UpstreamError("SSH connection is closed")
    start = time.perf_counter()
    try:
        await global_request(conn, KEEPALIVE_REQUEST)
    except (asyncssh.Error, OSError) as exc:
        raise UpstreamError(f"SSH round trip failed: {exc}") from None
    elapsed_ms = (time.perf_counter() - start) * 1000
    await asyncio.sleep(0)  # let a pending connection cleanup run before the check
    if conn.is_closed():
        raise UpstreamError("SSH connection lost")
    return elapsed_ms


async def query_gpus(conn: asyncssh.SSHClientConnection, timeout_s: float = 10.0) -> GpuInventory:
    """Run ``nvidia-smi --query-gpu=…`` on the host; its outcome as a ``GpuInventory``.

    What the command says (missing tool, no devices, garbage) is a state, not
    an error; only a transport failure raises ``UpstreamError``.
    """
    try:
        done = await conn.run(NVIDIA_SMI_COMMAND, check=False, timeout=timeout_s)
    except asyncssh.TimeoutError:
        return GpuInventory("error", message=f"nvidia-smi did not finish in {timeout_s:g} s")
    except (asyncssh.Error, OSError) as exc:
        raise UpstreamError(f"nvidia-smi over SSH failed: {exc}") from None
    return parse_gpu_query(_text(done.stdout), _text(done.stderr), done.exit_status)


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data if isinstance(data, str) else ""


async def connect_host(
    host: Host, credentials: ProbeCredentials, timeout_s: float = 10.0
) -> tuple[asyncssh.SSHClientConnection, float]:
    """An authenticated SSH connection to ``host`` and its TCP connect time in ms.

    Raises ``UpstreamError`` for anything that stops the login, including a host
    key that is not the pinned one.
    """
    try:
        trust = host_trust(host)
    except KeyMaterialError as exc:
        raise UpstreamError(str(exc)) from None
    sock, connect_ms = await _open_socket(host.address, host.port, timeout_s)
    cert = credentials.certificate
    if credentials.certificate_for is not None:
        cert = credentials.certificate_for(host.name)
    key: asyncssh.SSHKey | tuple[asyncssh.SSHKey, asyncssh.SSHCertificate] = (
        credentials.client_key if cert is None else (credentials.client_key, cert)
    )
    try:
        async with asyncio.timeout(timeout_s):
            conn = await asyncssh.connect(
                host.name,  # what a host certificate names; the socket is already open
                host.port,
                sock=sock,
                username=credentials.username,
                client_keys=[key],
                known_hosts=trust,
                config=None,
                agent_path=None,
                preferred_auth="publickey",
                login_timeout=timeout_s,
                keepalive_interval=0,  # the probe's own round trips keep it alive
                **connection_algorithms(),
            )
    except TimeoutError:
        sock.close()
        raise UpstreamError(f"host {host.name}: SSH login took over {timeout_s:g} s") from None
    except (asyncssh.Error, OSError) as exc:
        sock.close()
        raise UpstreamError(f"host {host.name}: SSH login failed: {exc}") from None
    except BaseException:  # cancelled by the caller's deadline
        sock.close()
        raise
    return conn, connect_ms


class SshHostLink:
    """A kept, pinned SSH connection to one host, remade when it drops."""

    def __init__(
        self, host: Host, credentials: ProbeCredentials, connect_timeout_s: float = 10.0
    ) -> None:
        self.host = host
        self._credentials = credentials
        self._timeout_s = connect_timeout_s
        self._conn: asyncssh.SSHClientConnection | None = None
        self._connect_ms: float | None = None

    async def _connection(self) -> asyncssh.SSHClientConnection:
        if self._conn is not None and self._conn.is_closed():
            self._conn = None
        if self._conn is None:
            conn, connect_ms = await connect_host(self.host, self._credentials, self._timeout_s)
            try:
                # The first round trip after a login also waits for sshd to finish
                # setting the session up (about 45 ms on loopback): not network time.
                await ssh_rtt_ms(conn)
            except BaseException:
                conn.abort()
                raise
            self._conn, self._connect_ms = conn, connect_ms
        return self._conn

    async def round_trip_ms(self) -> float:
        return await ssh_rtt_ms(await self._connection())

    async def tcp_connect_ms(self) -> float:
        return await tcp_connect_ms(self.host.address, self.host.port, self._timeout_s)

    async def gpus(self) -> GpuInventory:
        return await query_gpus(await self._connection(), self._timeout_s)

    def take_connect_ms(self) -> float | None:
        value, self._connect_ms = self._connect_ms, None
        return value

    def reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(asyncssh.Error, OSError):
                async with asyncio.timeout(self._timeout_s):
                    await conn.wait_closed()
