"""Request latency for ``gpuhop_api_request_duration_seconds``, as a plain ASGI middleware.

Labels are the matched route's template (``/v1/sessions/{session_id}``), never
the raw path, so a scanner probing random URLs adds one ``unmatched`` series,
not one per URL. A plain ASGI wrapper (not ``BaseHTTPMiddleware``) leaves
streamed responses (recordings) streaming.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.edges.http.metrics import GatewayMetrics

UNMATCHED = "unmatched"


def route_of(scope: Scope) -> str:
    """The full template of the route the router matched in ``scope``, or ``unmatched``.

    A route included under a prefix may carry only its own part (``/sessions/{id}``);
    the prefix is what precedes that part, rendered with the request's path
    parameters, in the request path.
    """
    template = getattr(scope.get("route"), "path_format", None)
    if not isinstance(template, str):
        return UNMATCHED
    path = str(scope.get("path", ""))
    rendered = template
    for name, value in dict(scope.get("path_params") or {}).items():
        rendered = rendered.replace("{" + str(name) + "}", str(value))
    if path.endswith(rendered):
        return path[: len(path) - len(rendered)] + template
    return template


class ApiTiming:
    """Observe each HTTP request's duration, method, route template and status code."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception with no response sent becomes a 500 outside us

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.api_request(
                str(scope.get("method", "")), route_of(scope), status, time.perf_counter() - started
            )
