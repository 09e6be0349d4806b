"""``/v1/health`` (no token) and ``/v1/me``."""

from __future__ import annotations

from fastapi import APIRouter

from gateway import __version__
from gateway.api.auth import AnyCaller, Ctx
from gateway.api.schemas import Health, Me
from gateway.policy.rules import allowed_accounts

public = APIRouter(tags=["meta"])
router = APIRouter(tags=["meta"])


@public.get("/health", response_model=Health)
async def health() -> Health:
    """Liveness: the API answers. Needs no token."""
    return Health(version=__version__)


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
