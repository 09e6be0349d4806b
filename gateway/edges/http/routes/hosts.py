"""``/v1/hosts``: the inventory as a client sees it."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.domain.models import AccessRequest, Host, Mode, Principal
from gateway.domain.policy.rules import evaluate
from gateway.edges.http.auth import AnyCaller, Ctx
from gateway.edges.http.context import ApiContext
from gateway.edges.http.schemas import HostOut

router = APIRouter(tags=["hosts"])


def _refusal(principal: Principal | None, host: Host, budget: str) -> str:
    """Why ``principal`` may not use ``host`` now ("" when it may); ``budget`` is the
    spent budget's reason, or "" when there is money left."""
    if principal is None:
        return "not a user in the inventory"
    decisions = [evaluate(principal, AccessRequest(host, mode)) for mode in Mode]
    if not any(d.allowed for d in decisions):
        return decisions[0].reason
    return budget


@router.get("/hosts", response_model=list[HostOut])
async def list_hosts(ctx: Ctx, caller: AnyCaller) -> list[HostOut]:
    """Every host in the inventory, with prices and whether the caller may use it.

    ``status``, ``gpus_free`` and ``rtt_ms`` become live once probing and GPU
    inventory report; until then they are ``unknown``, ``gpus_total`` and null.
    """
    countries = {r.name: r.country for r in ctx.inventory.regions}
    views = await ctx.live.views()
    budget = await _spent(ctx, caller.principal)
    out = []
    for h in ctx.inventory.hosts:
        v = views.get(h.name)
        refusal = _refusal(caller.principal, h, budget)
        out.append(
            HostOut(
                name=h.name,
                region=h.region,
                country=countries.get(h.region, ""),
                address=h.address,
                port=h.port,
                status=v.status if v else "unknown",
                gpu_model=h.gpu_model,
                gpus_total=v.gpus_total if v else h.gpu_count,
                gpus_free=v.gpus_free if v else h.gpu_count,
                price_per_gpu_hour=h.price_per_gpu_hour,
                egress_per_gb=h.egress_per_gb,
                residency=list(h.residency),
                labels=dict(h.labels),
                rtt_ms=v.rtt_ms if v else None,
                rtt_p95_ms=v.rtt_p95_ms if v else None,
                rtt_history=list(v.history) if v else [],
                utilization_pct=v.utilization_pct if v else None,
                allowed=not refusal,
                reason=refusal,
            )
        )
    return out


async def _spent(ctx: ApiContext, principal: Principal | None) -> str:
    """The budget's refusal for ``principal`` ("" while it may start sessions)."""
    if principal is None:
        return ""
    decision = await ctx.live.budget(principal.user, principal.team)
    return "" if decision.allowed else decision.reason
