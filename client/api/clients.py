"""``Client`` (synchronous: the CLI and ``gpuhop admin``) and ``AsyncClient`` (the TUI's
workers), over the one set of calls in ``client.api.base``.

    with Client("https://gw.example:8080", token) as api:
        for host in api.hosts():
            print(host.name, host.gpus_free)

    api = AsyncClient("http://127.0.0.1:8080", token)
    hosts = await api.hosts()
    await api.aclose()

Both send a ``Call`` and let it parse the answer; a transport failure becomes one
``ClientError`` here (``client.api.errors``). Pass ``transport=httpx.MockTransport(h)``
to test without a gateway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import httpx

from client.api import base
from client.api.base import GOLDEN_TIMEOUT_S, Call
from client.api.errors import transport_error
from client.api.models import (
    AuditPage,
    Certificate,
    Constraints,
    GatewayInfo,
    Golden,
    HostView,
    Me,
    Placement,
    SessionView,
)
from client.settings import Secret

T = TypeVar("T")


class Client:
    """One gateway's API, authenticated with one bearer token; one pooled connection."""

    def __init__(
        self,
        base_url: str,
        token: Secret,
        *,
        timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        options = base.client_options(base_url, token.get(), timeout, "gpuhop")
        self._http = httpx.Client(transport=transport, **options)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call[T]) -> T:
        """One request; its answer parsed, or one ``ClientError``."""
        try:
            response = self._http.request(call.method, call.path, **call.request_kw())
        except httpx.HTTPError as exc:
            raise transport_error(self.base_url, call.path, exc) from None
        return call.result(response)

    def me(self) -> Me:
        return self.send(base.me())

    def hosts(self) -> list[HostView]:
        return self.send(base.hosts())

    def gateway(self) -> GatewayInfo:
        return self.send(base.gateway())

    def sign_certificate(self, public_key: str, validity_s: int | None = None) -> Certificate:
        return self.send(base.sign_certificate(public_key, validity_s))

    def placement(self, constraints: Constraints) -> Placement:
        return self.send(base.placement(constraints))

    def golden(
        self,
        constraints: Constraints,
        *,
        top: int = 3,
        timeout_s: float = GOLDEN_TIMEOUT_S,
        command: str = "",
    ) -> Golden:
        return self.send(base.golden(constraints, top=top, timeout_s=timeout_s, command=command))

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request, errors translated as everywhere here (for ``client.admin``)."""
        return self.send(base.raw(method, path, **kw))

    def parse(self, model: type[T], response: httpx.Response) -> T:
        """``response``'s body as ``model``, or one ``ClientError``."""
        return base.parse(model, response)


class AsyncClient:
    """The same API for the TUI's workers: every method a coroutine."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timer = timer
        options = base.client_options(self.base_url, token, timeout, "gpuhop-tui")
        self._http = httpx.AsyncClient(transport=transport, **options)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(call.method, call.path, **call.request_kw())
        except httpx.HTTPError as exc:
            raise transport_error(self.base_url, call.path, exc) from None
        return call.result(response)

    async def ping(self) -> float:
        """This client's round trip to the gateway, in ms (``GET /v1/health``)."""
        start = self._timer()
        await self.send(base.health())
        return (self._timer() - start) * 1000.0

    async def me(self) -> Me:
        return await self.send(base.me())

    async def hosts(self) -> list[HostView]:
        return await self.send(base.hosts())

    async def sessions(
        self, *, live: bool | None = None, user: str | None = None, limit: int = 100
    ) -> list[SessionView]:
        page = await self.send(base.sessions(live=live, user=user, limit=limit))
        return list(page.sessions)

    async def session(self, session_id: str) -> SessionView:
        return await self.send(base.session(session_id))

    async def kill(self, session_id: str) -> None:
        await self.send(base.kill(session_id))

    async def placement(self, constraints: Constraints) -> Placement:
        return await self.send(base.placement(constraints))

    async def golden(self, constraints: Constraints, top: int = 3) -> Golden:
        return await self.send(base.golden(constraints, top=top))

    async def audit(
        self, *, kind: str = "", actor: str = "", after_id: int = 0, limit: int = 200
    ) -> AuditPage:
        return await self.send(base.audit(kind=kind, actor=actor, after_id=after_id, limit=limit))

    async def recording(self, session_id: str) -> str:
        return await self.send(base.recording(session_id))
