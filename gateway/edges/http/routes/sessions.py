"""``/v1/sessions`` and ``/v1/recordings``: session records, kills, terminal recordings.

A caller sees their own sessions; admins see everyone's. Another user's
session answers 404, not 403, so ids cannot be probed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse

from gateway.adapters.storage import Scope, SessionRecord
from gateway.edges.http.auth import AdminCaller, AnyCaller, Caller, Ctx, forbid
from gateway.edges.http.context import ApiContext as ApiContextT
from gateway.edges.http.errors import NOT_FOUND, ApiError
from gateway.edges.http.schemas import KillResult, SessionOut, SessionPage

router = APIRouter(tags=["sessions"])

SESSION_PAGE_MAX = 500
SessionId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
CAST_TYPE = "application/x-asciicast"


def _visible(caller: Caller, record: SessionRecord | None) -> SessionRecord:
    if record is None or (caller.scope is not Scope.ADMIN and record.user != caller.user):
        raise ApiError(404, "not_found", "no such session")
    return record


def _with_live_cost(ctx: ApiContextT, out: SessionOut) -> SessionOut:
    """A live session's running cost comes from its meter, not the record."""
    if out.live:
        cost = ctx.live.cost(out.id)
        if cost is not None:
            return out.model_copy(update={"cost_usd": round(cost.total, 6)})
    return out


@router.get("/sessions", response_model=SessionPage)
async def list_sessions(
    request: Request,
    ctx: Ctx,
    caller: AnyCaller,
    user: Annotated[str | None, Query(max_length=64)] = None,
    live: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=SESSION_PAGE_MAX)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> SessionPage:
    """The caller's sessions, newest first (admins: everyone's, or ``user``'s)."""
    if caller.scope is not Scope.ADMIN:
        if user is not None and user != caller.user:
            await forbid(request, caller, "only an admin token may list other users' sessions")
        user = caller.user
    records = await ctx.sessions.list(user=user, live=live, limit=limit, after=after)
    now = ctx.clock()
    return SessionPage(
        sessions=[_with_live_cost(ctx, SessionOut.of(r, now)) for r in records],
        next_after=records[-1].id if len(records) == limit else None,
    )


@router.get("/sessions/{session_id}", response_model=SessionOut, responses=NOT_FOUND)
async def get_session(ctx: Ctx, caller: AnyCaller, session_id: SessionId) -> SessionOut:
    """One session record."""
    record = _visible(caller, await ctx.sessions.get(session_id))
    return _with_live_cost(ctx, SessionOut.of(record, ctx.clock()))


@router.post(
    "/sessions/{session_id}/kill",
    response_model=KillResult,
    responses={
        **NOT_FOUND,
        202: {"model": KillResult, "description": "Asked of the replica running it"},
        409: NOT_FOUND[404] | {"description": "Not running"},
    },
)
async def kill_session(
    ctx: Ctx, caller: AdminCaller, session_id: SessionId, response: Response
) -> KillResult:
    """End a live session or recorded jump on this gateway (admin), and with a jump every
    session inside it. Audited as ``session.kill``. A session another replica runs is
    asked of that replica, which ends it within seconds: 202, ``killed`` false."""
    live = {s.id: s for s in ctx.live_sessions()}
    if session_id not in live:
        record = await ctx.sessions.get(session_id)
        if record is None:
            raise ApiError(404, "not_found", "no such session")
        if not ctx.kills.elsewhere(record):
            raise ApiError(409, "session_not_live", "the session is not running on this gateway")
        await _audit_kill(ctx, caller, session_id, record.user, record.host, record.replica)
        await ctx.kills.request(record, caller.user)
        response.status_code = 202
        return KillResult(session_id=session_id, killed=False)
    target = live[session_id]
    await _audit_kill(ctx, caller, session_id, target.user, target.host)
    if not ctx.kill_session(session_id):
        raise ApiError(409, "session_not_live", "the session ended before it could be killed")
    return KillResult(session_id=session_id, killed=True)


async def _audit_kill(
    ctx: ApiContextT, caller: Caller, session_id: str, user: str, host: str, replica: str = ""
) -> None:
    """``session.kill``, before the kill; ``replica`` names the one asked to do it."""
    data: dict[str, object] = {
        "session_id": session_id,
        "user": user,
        "host": host,
        "by": caller.user,
        "token_id": caller.token.id,
        "source": caller.source,
    }
    if replica:
        data["replica"] = replica
    await ctx.audit.append("session.kill", caller.user, data)


@router.get(
    "/recordings/{session_id}",
    response_class=FileResponse,
    responses={**NOT_FOUND, 200: {"content": {CAST_TYPE: {}}, "description": "asciicast v2"}},
)
async def get_recording(ctx: Ctx, caller: AnyCaller, session_id: SessionId) -> FileResponse:
    """The session's terminal recording (asciicast v2), streamed; owner or admin."""
    record = await ctx.sessions.get(session_id)
    if record is not None or caller.scope is not Scope.ADMIN:
        _visible(caller, record)
    path: FsPath = ctx.settings.gateway.recordings_dir / f"{session_id}.cast"
    if not await asyncio.to_thread(path.is_file):
        raise ApiError(404, "not_found", "no recording for this session")
    return FileResponse(path, media_type=CAST_TYPE, filename=f"{session_id}.cast")
