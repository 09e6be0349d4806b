"""``GET /metrics``: Prometheus text exposition of the gateway's metrics.

Needs a ``metrics`` (or ``admin``) API token by default
(``ApiContext.metrics_token_required``, the ``metrics_require_token`` setting):
Prometheus sends it with ``authorization: {type: Bearer, credentials_file: ...}``
in its scrape config. Metrics name users, hosts and session counts, so they are
not for anyone who can reach the port; the setting's opt-out is for a private
network. Not in the OpenAPI document: it is not part of the JSON API.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from gateway.adapters.storage import Scope
from gateway.edges.http.auth import authenticate, bearer, forbid, get_ctx
from gateway.edges.http.errors import ApiError

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """The scrape body. Async on purpose: collectors read the live session registry and
    probe state, which only the event loop thread changes."""
    ctx = get_ctx(request)
    if ctx.metrics is None:
        raise ApiError(404, "not_found", "metrics are not enabled on this gateway")
    if ctx.metrics_token_required:
        caller = await authenticate(request, await bearer(request))
        if caller.scope not in (Scope.METRICS, Scope.ADMIN):
            await forbid(
                request, caller, f"needs a metrics or admin token; this one is {caller.scope}"
            )
    body, content_type = ctx.metrics.render(request.headers.get("accept", ""))
    return Response(body, headers={"Content-Type": content_type})
