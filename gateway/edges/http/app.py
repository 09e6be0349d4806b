"""The FastAPI application: routes, error handlers, and the OpenAPI document.

``build_app`` makes the app without any services (enough for the OpenAPI
document); ``create_app`` attaches an ``ApiContext`` for serving. Interactive
docs pages are off: they load scripts from a CDN. ``/openapi.json`` is served
and committed as ``docs/openapi.json`` (regenerate with
``python -m gateway.edges.http.openapi > docs/openapi.json``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gateway import __version__
from gateway.domain.ratelimit import FailureLimiter
from gateway.edges.http.bodylimit import BodyLimit
from gateway.edges.http.context import ApiContext
from gateway.edges.http.errors import ERROR_RESPONSES, install_handlers
from gateway.edges.http.routes import (
    admin,
    audit,
    certificates,
    costs,
    hosts,
    meta,
    metrics,
    placement,
    sessions,
    tokens,
)
from gateway.edges.http.timing import ApiTiming

DESCRIPTION = """\
The gpuhop gateway's HTTP API: hosts, sessions, audit events, recordings,
SSH user certificates, API tokens, and (admin tokens) the directory of users,
keys, roles, teams, data sets, budgets and hosts. Authenticate with
`Authorization: Bearer gph_...`. Errors are
`{"error": {"code": "...", "message": "..."}}` with a stable code.
"""


def build_app() -> FastAPI:
    app = FastAPI(
        title="gpuhop gateway API",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    install_handlers(app)
    app.include_router(meta.public, prefix="/v1")
    for routes in (meta, hosts, sessions, audit, certificates, tokens, placement, costs, admin):
        app.include_router(routes.router, prefix="/v1", responses=ERROR_RESPONSES)
    app.include_router(metrics.router)  # /metrics, where Prometheus looks by default
    return app


#: Routes whose bodies may be larger than ``api_max_body_bytes`` (path prefix -> bytes).
#: None need it today: every JSON body the API takes is a few KiB at most.
ROUTE_BODY_CAPS: dict[str, int] = {}


def create_app(ctx: ApiContext) -> FastAPI:
    """The app serving ``ctx``'s gateway.

    Middleware, outermost first: the client address from a trusted proxy (only
    when ``api_trusted_proxies`` names one), request timing, then the body cap,
    so no route, parser or dependency ever sees more than its cap.
    """
    app = build_app()
    g = ctx.settings.gateway
    app.state.ctx = ctx
    app.state.limiter = FailureLimiter(
        g.auth_max_failures,
        g.auth_failure_window_s,
        g.auth_ban_s,
        address_max_failures=g.auth_address_max_failures,
    )
    app.add_middleware(BodyLimit, default=g.api_max_body_bytes, routes=ROUTE_BODY_CAPS)
    if ctx.metrics is not None:
        app.add_middleware(ApiTiming, metrics=ctx.metrics)
    if g.api_trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(g.api_trusted_proxies))
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document, as ``/openapi.json`` serves it."""
    return build_app().openapi()
