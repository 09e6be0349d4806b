"""``GET /metrics``: Prometheus text exposition of the gateway's metrics.

Open by default, as Prometheus scrapers expect; with
``ApiContext.metrics_token_required`` it takes any valid API token
(``Authorization: Bearer gph_...``, Prometheus' ``authorization`` scrape
setting). Not in the OpenAPI document: it is not part of the JSON API.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from gateway.api.auth import authenticate, bearer, get_ctx
from gateway.api.errors import ApiError

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """The scrape body. Async on purpose: collectors read the live session registry and
    probe state, which only the event loop thread changes."""
    ctx = get_ctx(request)
    if ctx.metrics is None:
        raise ApiError(404, "not_found", "metrics are not enabled on this gateway")
    if ctx.metrics_token_required:
        await authenticate(request, await bearer(request))
    body, content_type = ctx.metrics.render(request.headers.get("accept", ""))
    return Response(body, headers={"Content-Type": content_type})
