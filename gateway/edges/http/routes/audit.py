"""``/v1/audit``: the hash-chained audit log, for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from gateway.edges.http.auth import AdminCaller, Ctx
from gateway.edges.http.schemas import AuditEventOut, AuditPage, AuditVerify

router = APIRouter(tags=["audit"])

AUDIT_PAGE_MAX = 1000


@router.get("/audit", response_model=AuditPage)
async def list_audit(
    ctx: Ctx,
    caller: AdminCaller,
    kind: Annotated[str | None, Query(max_length=128)] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    after_id: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=AUDIT_PAGE_MAX)] = 100,
) -> AuditPage:
    """Events with id > ``after_id``, oldest first; page on with ``next_after_id``."""
    events = await ctx.audit.list(kind=kind, actor=actor, after_id=after_id, limit=limit)
    return AuditPage(
        events=[AuditEventOut.of(e) for e in events],
        next_after_id=events[-1].id if len(events) == limit else None,
    )


@router.get("/audit/verify", response_model=AuditVerify)
async def verify_audit(ctx: Ctx, caller: AdminCaller) -> AuditVerify:
    """Walk the whole chain; ``ok`` is false and ``first_broken`` set when a link fails."""
    return AuditVerify.of(await ctx.audit.verify())
