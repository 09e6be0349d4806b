"""``/v1/health`` and ``/v1/ready`` (no token), ``/v1/me`` and ``/v1/gateway``."""

from __future__ import annotations

from fastapi import APIRouter, Response

from gateway import __version__
from gateway.domain.policy.rules import allowed_accounts
from gateway.edges.http.auth import AnyCaller, Ctx
from gateway.edges.http.schemas import GatewayInfo, Health, Me, Ready

public = APIRouter(tags=["meta"])
router = APIRouter(tags=["meta"])


@public.get("/health", response_model=Health)
async def health() -> Health:
    """Liveness: the process answers (readiness is ``/v1/ready``). Needs no token."""
    return Health(version=__version__)


@public.get("/ready", response_model=Ready, responses={503: {"model": Ready}})
async def ready(ctx: Ctx, response: Response) -> Ready:
    """Readiness: storage answers, keys are loaded, not draining; else 503. Needs no token."""
    problem = await ctx.readiness.problem(ctx.ssh_keys.lines)
    if problem is None:
        return Ready(status="ready", version=__version__)
    response.status_code = 503
    return Ready(status="unready", reason=problem[0], message=problem[1], version=__version__)


@router.get("/me", response_model=Me)
async def me(ctx: Ctx, caller: AnyCaller) -> Me:
    """The user, scope and grants the bearer token speaks for."""
    principal = caller.principal
    user = ctx.inventory.user(caller.user)
    return Me(
        user=caller.user,
        scope=caller.scope,
        token_id=caller.token.id,
        token_name=caller.token.name,
        expires_at=caller.token.expires_at,
        in_inventory=user is not None,
        team=user.team if user else "",
        roles=[r.name for r in principal.roles] if principal else [],
        accounts=list(allowed_accounts(principal)) if principal else [],
    )


@router.get("/gateway", response_model=GatewayInfo)
async def gateway_info(ctx: Ctx, caller: AnyCaller) -> GatewayInfo:
    """Where the SSH front listens and the keys a client pins for it (``gpuhop login``)."""
    g = ctx.settings.gateway
    return GatewayInfo(
        version=__version__,
        ssh_host=g.ssh_host,
        ssh_port=ctx.ssh_port or g.ssh_port,
        host_key=ctx.ssh_keys.current,
        gateway_keys=list(ctx.ssh_keys.lines),
        host_ca_key=ctx.host_ca_key,
        host_keys={h.name: h.host_key for h in ctx.inventory.hosts},
    )
