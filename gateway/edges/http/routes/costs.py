"""``/v1/costs``: what sessions cost, summed per user, team, host or UTC day."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from gateway.adapters.storage import Scope
from gateway.domain.metering.meter import Cost, UsageRecord, totals
from gateway.edges.http.auth import AnyCaller, Ctx
from gateway.services.live import utc_day_and_month

router = APIRouter(tags=["costs"])

_OUT = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class TotalOut(BaseModel):
    model_config = _OUT

    key: str
    """The user, team, host, or ISO day (UTC)."""
    currency: str
    sessions: int
    gpu_hours: float
    egress_bytes: float
    gpu_cost: float
    egress_cost: float
    cost: float


@router.get("/costs", response_model=list[TotalOut])
async def costs(
    ctx: Ctx,
    caller: AnyCaller,
    by: Literal["user", "team", "host", "day"] = "user",
    since: Annotated[float | None, Query(ge=0)] = None,
) -> list[TotalOut]:
    """Session costs since ``since`` (default: the start of this UTC month), live sessions
    at their running cost. Admins see everyone; others their own sessions."""
    now = ctx.clock()
    start = since if since is not None else utc_day_and_month(now)[1]
    user = None if caller.scope is Scope.ADMIN else caller.user
    teams = {u.name: u.team for u in ctx.inventory.users}
    hosts = {h.name: h for h in ctx.inventory.hosts}
    usage = []
    for r in await ctx.sessions.list(user=user, limit=10_000):
        if r.started_at < start:
            continue
        host = hosts.get(r.host)
        rate = ctx.live.rate(host) if host is not None else None
        egress = r.bytes_down / 1e9 * rate.egress_per_gb if rate is not None else 0.0
        live_cost = ctx.live.cost(r.id) if r.live else None
        total = live_cost.total if live_cost is not None else (r.cost_usd or 0.0)
        end = r.ended_at if r.ended_at is not None else now
        usage.append(
            UsageRecord(
                session_id=r.id,
                user=r.user,
                host=r.host,
                started_at=r.started_at,
                ended_at=max(end, r.started_at),
                cost=Cost(gpu=max(0.0, total - egress), egress=min(egress, total)),
                team=teams.get(r.user, ""),
                gpu_hours=r.gpus * max(0.0, end - r.started_at) / 3600,
                egress_bytes=r.bytes_down,
            )
        )
    return [
        TotalOut(
            key=t.key,
            currency=t.currency,
            sessions=t.sessions,
            gpu_hours=round(t.gpu_hours, 6),
            egress_bytes=t.egress_bytes,
            gpu_cost=round(t.gpu_cost, 6),
            egress_cost=round(t.egress_cost, 6),
            cost=round(t.cost, 6),
        )
        for t in totals(usage, by)
    ]
