"""Serve the API on the gateway's own event loop, with uvicorn.

``start_api`` binds (port 0 picks a free port), starts serving and returns
once the listener accepts; ``ApiServer.stop`` finishes in-flight requests up
to a timeout. Signals stay with the gateway: uvicorn's own handlers are not
installed, so SIGTERM reaches ``serve`` in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import structlog
import uvicorn

from gateway.edges.http.app import create_app
from gateway.edges.http.context import ApiContext
from gateway.errors import GatewayError

log = structlog.get_logger("gpuhop.api")

START_TIMEOUT_S = 10.0


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the gateway owns signal handling


def bind_api_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; may be bound once and shared by worker processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise GatewayError(f"HTTP API cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while not server.started:
        if task.done():
            exc = None if task.cancelled() else task.exception()
            raise GatewayError(f"HTTP API failed to start: {exc!r}")
        if loop.time() > deadline:
            raise GatewayError("HTTP API did not start in time")
        await asyncio.sleep(0.01)


class ApiServer:
    """A running API listener; ``port`` is the bound port."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], host: str, port: int):
        self._server = server
        self._task = task
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish up to ``timeout_s``, then close."""
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s + 1.0)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        log.info("api stopped", url=self.url)


async def start_api(
    ctx: ApiContext,
    host: str,
    port: int,
    *,
    sock: socket.socket | None = None,
    graceful_timeout_s: float = 5.0,
) -> ApiServer:
    """Serve the API for ``ctx`` on ``host:port`` (or an already bound ``sock``)."""
    listener = sock if sock is not None else bind_api_socket(host, port)
    bound = listener.getsockname()
    config = uvicorn.Config(
        create_app(ctx),
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        ws="none",
        timeout_graceful_shutdown=int(graceful_timeout_s),
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[listener]), name="gpuhop-api")
    try:
        await _started(server, task)
    except BaseException:
        server.should_exit = True
        task.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task
        listener.close()
        raise
    api = ApiServer(server, task, str(bound[0]), int(bound[1]))
    log.info("api listening", url=api.url)
    return api
