"""Request bodies capped before routing and parsing, as a plain ASGI middleware.

FastAPI reads a whole body before any dependency runs, authentication included,
so without a cap anyone who can reach the API can make the gateway hold as
much as they send. Here every request body is capped twice:

- by ``Content-Length``: a declared size over the cap is answered 413 at once,
  without reading a byte of the body (and the connection is closed);
- while streaming (chunked, or a ``Content-Length`` that lies): the bytes the
  app receives are counted, and the first chunk past the cap ends the request
  with 413; the app sees a disconnect and whatever it answers is dropped.

So one request costs at most its cap in memory, whoever sends it. The 413
closes the connection: reading on to drain the rest of the body would cost the
gateway CPU for every byte an attacker sends. A client that reads the answer
after a failed write (curl, httpx's sync client) sees the 413; one that gives
up on the failed write (httpx's async client over anyio) sees the connection
reset. The cap is
``default`` unless a path prefix in ``routes`` names a larger (or smaller) one
for routes that need it; the longest matching prefix wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MESSAGE = "request body is larger than this route accepts ({cap} bytes)"


def _error(cap: int) -> bytes:
    body = {"error": {"code": "body_too_large", "message": MESSAGE.format(cap=cap)}}
    return json.dumps(body).encode()


def _declared_length(scope: Scope) -> int | None:
    """The ``Content-Length`` the client declared, or None (none, or chunked).

    The HTTP server (h11) has already refused malformed and conflicting values.
    """
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    """Answer 413 ``body_too_large`` to any request whose body exceeds its route's cap."""

    def __init__(self, app: ASGIApp, default: int, routes: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.default = default
        # Longest prefix first, so /v1/admin/hosts can differ from /v1/admin.
        self.routes = sorted((routes or {}).items(), key=lambda item: -len(item[0]))

    def cap_for(self, path: str) -> int:
        for prefix, cap in self.routes:
            if path.startswith(prefix):
                return cap
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(str(scope.get("path", "")))
        declared = _declared_length(scope)
        if declared is not None and declared > cap:
            await self._refuse(send, cap)
            return
        received = 0
        started = False
        refused = False

        async def capped_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    refused = True
                    if not started:
                        await self._refuse(send, cap)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer; the app's own is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The app failed on the disconnect it was handed; the 413 already went out.

    @staticmethod
    async def _refuse(send: Send, cap: int) -> None:
        body = _error(cap)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
