"""A userspace TCP proxy that adds a region's round-trip time on loopback.

``tc netem`` is not available where tests run, so each simulated host sits
behind this proxy: every chunk read from one side is written to the other
``rtt / 2`` later, in order, in both directions. In-flight bytes are bounded per
direction (reading pauses when full), EOF is forwarded after the data before it,
and the proxy can *stop* (host gone: listener and connections closed) or
*freeze* (link hangs: connections stay open, nothing moves).

Delays are accurate to about a millisecond. The TCP handshake is not delayed
(the kernel completes it before the proxy sees the connection), so measure
latency with a first exchange of data, such as the SSH banner, not connect().

    python -m gpuhop_sim.delayproxy --target 127.0.0.1:2201 --rtt 40
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
from collections import deque
from typing import cast

from gpuhop_sim.loopthread import LoopThread
from gpuhop_sim.ports import require_loopback

# asyncio reads up to 256 KiB per call; a side's writes count as "full" past this.
CHUNK = 256 * 1024
# Per direction; bounds memory and acts like a TCP window: one connection moves at
# most MAX_IN_FLIGHT per rtt/2 (about 200 MB/s at 40 ms).
MAX_IN_FLIGHT = 4 * 1024 * 1024
# The loop's timers fire up to 1 ms late (epoll rounds timeouts up to whole ms),
# so wake up to half a millisecond early and send what is due within that margin:
# the error is then within about +-0.5 ms each way instead of 0..+1 ms.
_EARLY = 0.0005


class _Side(asyncio.Protocol):
    """One socket of a proxied connection."""

    def __init__(self, link: _Link, upstream: bool) -> None:
        self.link = link
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.set_write_buffer_limits(high=CHUNK)
        self.link.side_made(self)

    def data_received(self, data: bytes) -> None:
        self.link.out_of(self).push(data)

    def eof_received(self) -> bool:
        self.link.out_of(self).push(None)
        return True  # keep the write half open: half-close is forwarded, not enforced

    def pause_writing(self) -> None:
        self.link.into(self).set_sink_paused(True)

    def resume_writing(self) -> None:
        self.link.into(self).set_sink_paused(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.close(abort=True)


class _Direction:
    """One way of a connection: a FIFO of (due time, chunk or None for EOF)."""

    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy
        self.source: _Side | None = None
        self.sink: _Side | None = None
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.in_flight = 0
        self.last_due = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.sink_paused = False
        self.reading_paused = False
        self.eof_sent = False

    def push(self, data: bytes | None) -> None:
        loop = self.proxy.loop
        due = max(loop.time() + self.proxy.one_way, self.last_due)
        self.last_due = due
        self.queue.append((due, data))
        self.in_flight += len(data) if data else 0
        self.update_reading()
        self.schedule()

    def schedule(self) -> None:
        if self.timer is None and self.queue and self.sink is not None and not self.proxy.frozen:
            self.timer = self.proxy.loop.call_at(self.queue[0][0] - self.proxy.early, self.flush)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def flush(self) -> None:
        self.timer = None
        sink = self.sink.transport if self.sink else None
        if sink is None or sink.is_closing():
            return
        now = self.proxy.loop.time() + self.proxy.early
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if data is None:
                self.eof_sent = True
                if sink.can_write_eof():
                    with contextlib.suppress(OSError):  # the peer is already gone
                        sink.write_eof()
                self.proxy.links_done()
                continue
            sink.write(data)
            self.in_flight -= len(data)
        self.update_reading()
        self.schedule()

    def set_sink_paused(self, paused: bool) -> None:
        self.sink_paused = paused
        self.update_reading()

    def update_reading(self) -> None:
        source = self.source.transport if self.source else None
        if source is None or source.is_closing():
            return
        pause = self.proxy.frozen or self.sink_paused or self.in_flight >= self.proxy.max_in_flight
        if pause != self.reading_paused:
            self.reading_paused = pause
            if pause:
                source.pause_reading()
            else:
                source.resume_reading()


class _Link:
    """A client connection and the upstream connection made for it."""

    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy
        self.up = _Direction(proxy)  # client -> target
        self.down = _Direction(proxy)  # target -> client
        self.sides: list[_Side] = []
        self.connector: asyncio.Task[None] | None = None
        self.closed = False

    def side_made(self, side: _Side) -> None:
        self.sides.append(side)
        if self.closed:  # the client left while the upstream connection was being made
            self.closed = False
            self.close(abort=True)
            return
        if side.upstream:
            self.up.sink = self.down.source = side
            self.up.schedule()
            self.down.update_reading()
        else:
            self.up.source = self.down.sink = side
            self.up.update_reading()
            self.connector = asyncio.ensure_future(self.connect())

    def out_of(self, side: _Side) -> _Direction:
        return self.up if side is self.up.source else self.down

    def into(self, side: _Side) -> _Direction:
        return self.down if side is self.down.sink else self.up

    async def connect(self) -> None:
        await self.proxy.thawed.wait()  # a frozen link does not even reach the host
        try:
            await self.proxy.loop.create_connection(
                lambda: _Side(self, upstream=True), self.proxy.target_host, self.proxy.target_port
            )
        except OSError:
            self.close(abort=True)

    def finished(self) -> bool:
        return self.up.eof_sent and self.down.eof_sent

    def close(self, abort: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.proxy.links.discard(self)
        if self.connector is not None and not self.connector.done():
            self.connector.cancel()
        for direction in (self.up, self.down):
            direction.cancel()
        for side in self.sides:
            if side.transport is None:
                continue
            if abort:
                side.transport.abort()
            else:
                side.transport.close()


class DelayProxy:
    """Forward ``listen`` → ``target`` on loopback, adding ``rtt_ms`` of round trip."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        rtt_ms: float,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        require_loopback(target_host, "target")
        require_loopback(listen_host, "listen address")
        self.target_host, self.target_port = target_host, target_port
        self.listen_host, self._listen_port = listen_host, listen_port
        self.max_in_flight = max_in_flight
        self.one_way = rtt_ms / 2000.0
        self.frozen = False
        self.links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thawed: asyncio.Event | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "DelayProxy used before start()"
        return self._loop

    @property
    def thawed(self) -> asyncio.Event:
        assert self._thawed is not None, "DelayProxy used before start()"
        return self._thawed

    @property
    def port(self) -> int:
        """The port the proxy listens on (the one asked for, or the one bound)."""
        if self._server is not None and self._server.sockets:
            port: int = self._server.sockets[0].getsockname()[1]
            return port
        return self._listen_port

    @property
    def rtt_ms(self) -> float:
        return self.one_way * 2000.0

    @property
    def early(self) -> float:
        """How early a chunk may go out; never more than half its delay."""
        return min(_EARLY, self.one_way / 2)

    async def start(self) -> None:
        """Listen; returns once the port is bound."""
        self._loop = asyncio.get_running_loop()
        self._thawed = asyncio.Event()
        if not self.frozen:
            self._thawed.set()
        self._server = await self._loop.create_server(
            self._accept, self.listen_host, self._listen_port, reuse_address=True
        )
        self._listen_port = self.port

    def _accept(self) -> _Side:
        link = _Link(self)
        self.links.add(link)
        return _Side(link, upstream=False)

    def links_done(self) -> None:
        for link in [link for link in self.links if link.finished()]:
            link.close(abort=False)

    async def stop(self) -> None:
        """Close the listener and every connection: the host went away."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in list(self.links):
            link.close(abort=True)
        if server is not None:
            await server.wait_closed()

    def freeze(self) -> None:
        """Keep connections open but move no bytes in either direction."""
        self.frozen = True
        if self._thawed is not None:
            self._thawed.clear()
        for link in self.links:
            for direction in (link.up, link.down):
                direction.cancel()
                direction.update_reading()

    def thaw(self) -> None:
        """Undo ``freeze``; held bytes go out at once, new ones with the usual delay."""
        self.frozen = False
        if self._thawed is not None:
            self._thawed.set()
        for link in self.links:
            for direction in (link.up, link.down):
                direction.update_reading()
                direction.schedule()

    def set_rtt(self, rtt_ms: float) -> None:
        """Change the delay for bytes read from now on (order is still kept)."""
        self.one_way = rtt_ms / 2000.0


class ThreadedDelayProxy:
    """``DelayProxy`` on its own loop thread, for synchronous callers."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        rtt_ms: float,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        require_loopback(target_host, "target")
        require_loopback(listen_host, "listen address")
        self._args = (target_host, target_port)
        self._max_in_flight = max_in_flight
        self._listen = (listen_host, listen_port)
        self._rtt_ms = rtt_ms
        self._frozen = False
        self._thread: LoopThread | None = None
        self._proxy: DelayProxy | None = None

    @property
    def port(self) -> int:
        return self._listen[1]

    @property
    def rtt_ms(self) -> float:
        return self._rtt_ms

    @property
    def running(self) -> bool:
        return self._proxy is not None

    def start(self) -> ThreadedDelayProxy:
        if self._proxy is not None:
            return self
        thread = LoopThread(f"delayproxy-{self._args[1]}")
        thread.start()
        proxy = DelayProxy(
            *self._args, self._rtt_ms, *self._listen, max_in_flight=self._max_in_flight
        )
        proxy.frozen = self._frozen
        try:
            thread.run(proxy.start())
        except BaseException:
            thread.stop()
            raise
        self._thread, self._proxy = thread, proxy
        self._listen = (self._listen[0], proxy.port)
        return self

    def stop(self) -> None:
        """Close the listener and all connections, and end the loop thread."""
        thread, proxy = self._thread, self._proxy
        self._thread = self._proxy = None
        if thread is not None and proxy is not None:
            try:
                thread.run(proxy.stop(), timeout=10)
            finally:
                thread.stop()

    def restart(self) -> ThreadedDelayProxy:
        """Stop (dropping connections), then listen again on the same port."""
        self.stop()
        return self.start()

    def freeze(self) -> None:
        self._frozen = True
        if self._thread is not None and self._proxy is not None:
            self._thread.call(self._proxy.freeze)

    def thaw(self) -> None:
        self._frozen = False
        if self._thread is not None and self._proxy is not None:
            self._thread.call(self._proxy.thaw)

    def set_rtt(self, rtt_ms: float) -> None:
        self._rtt_ms = rtt_ms
        if self._thread is not None and self._proxy is not None:
            proxy = self._proxy
            self._thread.call(lambda: proxy.set_rtt(rtt_ms))

    def __enter__(self) -> ThreadedDelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _serve(target: tuple[str, int], rtt_ms: float, listen_port: int) -> None:
    proxy = DelayProxy(target[0], target[1], rtt_ms, listen_port=listen_port)
    await proxy.start()
    print(
        f"listening 127.0.0.1:{proxy.port} -> {target[0]}:{target[1]} rtt={rtt_ms:g}ms", flush=True
    )
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await proxy.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuhop_sim.delayproxy", description=__doc__)
    parser.add_argument("--target", type=_parse_target, required=True, help="HOST:PORT (loopback)")
    parser.add_argument("--rtt", type=float, required=True, help="round-trip time to add, ms")
    parser.add_argument("--listen", type=int, default=0, help="port to listen on (0 = any)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args.target, args.rtt, args.listen))
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
