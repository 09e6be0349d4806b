"""Passthrough: relay a ``direct-tcpip`` channel to an inventory host's sshd.

The user's SSH session to the host runs end to end inside this channel; the
gateway sees only ciphertext and counts bytes. Flow control is symmetric: when
the host socket's write buffer fills, the channel stops reading (the SSH window
then stops the user); when the channel's send window is exhausted, the host
socket stops reading. Nothing is buffered without bound. When either side
closes, the other is closed too, every time.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import asyncssh

from gateway.errors import UpstreamError

CloseCallback = Callable[["RelayStats"], None]
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only
# Reads of two full segments or more are acknowledged at once by the kernel anyway.
_QUICKACK_BELOW = 64 * 1024


@dataclass(slots=True)
class RelayStats:
    bytes_up: int = 0  # user -> host
    bytes_down: int = 0  # host -> user
    started: float = 0.0
    ended: float = 0.0
    error: str = ""

    @property
    def duration_s(self) -> float:
        return max(0.0, (self.ended or time.monotonic()) - self.started)


class _HostSide(asyncio.Protocol):
    """The TCP leg to the host; writes what it reads into the user's channel."""

    def __init__(self, relay: PassthroughSession) -> None:
        self._relay = relay
        self._transport: asyncio.Transport | None = None
        self._sock: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        # Hold the host's first bytes (its banner) until the user's channel is open.
        # uvloop may deliver data even so, so data_received also keeps it aside.
        # (uvloop's transports are not asyncio.Transport subclasses: cast, not assert.)
        transport = cast(asyncio.Transport, transport)
        transport.pause_reading()
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if len(data) < _QUICKACK_BELOW and self._sock is not None and _QUICKACK is not None:
            # Acknowledge at once. sshd leaves Nagle on for sessions without a
            # tty, so it holds its next small write until this ACK; the kernel's
            # delayed ACK would stall a command's reply by 40 ms.
            self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        relay = self._relay
        relay.stats.bytes_down += len(data)
        chan = relay.chan
        if chan is None:
            relay.early.append(data)
            if self._transport is not None:
                self._transport.pause_reading()
            return
        try:
            chan.write(data)
        except BrokenPipeError:
            relay.host_gone()

    def eof_received(self) -> bool:
        # An SSH server never half-closes: EOF means the host is gone. Returning
        # False closes the socket, and connection_lost closes the user's channel.
        self._relay.host_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.host_closed(exc)

    def pause_writing(self) -> None:
        if self._relay.chan is not None:
            self._relay.chan.pause_reading()

    def resume_writing(self) -> None:
        if self._relay.chan is not None:
            self._relay.chan.resume_reading()


class PassthroughSession(asyncssh.SSHTCPSession[bytes]):
    """The user's side of a passthrough forward.

    The host leg is connected (:meth:`connect`) before the channel is confirmed,
    so an unreachable host fails the channel open the way OpenSSH does.
    """

    def __init__(self, on_close: CloseCallback) -> None:
        self._on_close = on_close
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.early: list[bytes] = []  # host bytes that came before the channel opened
        self._host: asyncio.Transport | None = None
        self._closed = False
        self._host_lost = False
        self.stats = RelayStats(started=time.monotonic())

    async def connect(self, address: str, port: int, connect_timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _HostSide(self), address, port),
                connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"host unreachable: {exc or 'timed out'}") from exc
        self._host = transport

    async def connect_socket(self, sock: socket.socket) -> None:
        """Bridge to an already-connected socket (the inner hop of a recorded jump)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(lambda: _HostSide(self), sock=sock)
        self._host = transport

    def abandon(self) -> None:
        """The channel was never opened: drop the host leg."""
        if self._host is not None:
            self._host.close()

    # -- user side (asyncssh callbacks) --

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.chan = chan
        for chunk in self.early:
            chan.write(chunk)
        self.early.clear()
        if self._host_lost:
            chan.close()
        elif self._host is not None:
            self._host.resume_reading()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.stats.bytes_up += len(data)
        self._host.write(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        if self._host is not None and self._host.can_write_eof():
            self._host.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        # A user's ssh that just goes away (no disconnect message) is a normal end.
        if exc is not None and not self.stats.error and not isinstance(exc, BrokenPipeError):
            self.stats.error = str(exc)
        if self._host is not None:
            self._host.close()
        self._finish()

    def pause_writing(self) -> None:
        if self._host is not None:
            self._host.pause_reading()

    def resume_writing(self) -> None:
        if self._host is not None and not self._host.is_closing():
            self._host.resume_reading()

    # -- host side --

    def host_eof(self) -> None:
        if self.chan is not None:
            self.chan.write_eof()

    def host_gone(self) -> None:
        """The user's channel can no longer take data: drop the host leg."""
        if self._host is not None:
            self._host.close()

    def host_closed(self, exc: Exception | None) -> None:
        self._host_lost = True
        if exc is not None and not self.stats.error:
            self.stats.error = str(exc)
        if self.chan is not None:
            self.chan.close()

    def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stats.ended = time.monotonic()
        self._on_close(self.stats)
