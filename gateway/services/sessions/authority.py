"""One authority, asked every time: directory changes reach live connections.

The gateway holds one directory (``FrontContext.inventory``), swapped whole when
it changes: an admin change through this process, or one made elsewhere (another
replica, the local CLI) that the version poll picks up. Every channel, inner hop
and forward asks its connection's
:meth:`~gateway.services.sessions.context.Authority.current_principal`
when it opens, so nothing decides on a principal captured at login. And on each
swap :func:`enforce` walks what is live and closes what the new directory no
longer allows:

- a connection whose user, or whose login key, was removed: every session and
  jump in it, then the connection itself (``connection.revoked``);
- a session or jump the user's roles no longer allow (a role revoked or
  narrowed, its host removed): that one alone (``session.revoked``); the rest
  keep running.

Each ends with one line to the user saying why. A session that was being opened
while a swap ran registers with the directory generation it was decided under
(:meth:`FrontContext.register`) and is checked again if that moved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from gateway.domain.models import AccessRequest
from gateway.domain.policy.rules import evaluate

if TYPE_CHECKING:
    from gateway.services.sessions.context import ActiveSession, FrontContext

log = structlog.get_logger("gpuhop.authority")

DISCONNECT_GRACE_S = 0.25  # lets the one-line notices reach the user before the disconnect


def enforce(ctx: FrontContext) -> int:
    """Close what the directory now in ``ctx`` no longer allows; how many were closed.

    Runs on the event loop right after the swap, so it sees the new directory
    whole. Sessions first (their notices go out), then jumps, then connections.
    """
    ctx.generation += 1
    closed = 0
    for session in [*ctx.sessions.values(), *ctx.jumps.values()]:
        closed += recheck(ctx, session)
    for conn in list(ctx.connections):
        if conn.principal is None:
            continue  # still logging in: auth_completed reads the new directory
        principal, why = conn.current_principal()
        if principal is None:
            conn.revoke(why)
            closed += 1
    if closed:
        log.info("directory change closed live sessions", closed=closed)
    return closed


def refusal(ctx: FrontContext, session: ActiveSession) -> tuple[str, bool]:
    """Why the current directory no longer allows ``session`` ("" when it does), and
    whether that holds for its whole connection (the user or login key is gone)."""
    if session.authority is None:
        return "", False
    principal, why = session.authority.current_principal()
    if principal is None:
        return why, True
    host = ctx.inventory.host(session.host)
    if host is None:
        return f"host {session.host} was removed from the inventory", False
    request = AccessRequest(host, session.mode, account=session.account, gpus=session.gpus)
    decision = evaluate(principal, request)
    return ("" if decision.allowed else decision.reason), False


def recheck(ctx: FrontContext, session: ActiveSession) -> int:
    """End ``session`` if the directory no longer allows it (1), else leave it (0)."""
    why, whole_connection = refusal(ctx, session)
    if not why:
        return 0
    jump = session.id in ctx.jumps
    (ctx.jumps if jump else ctx.sessions).pop(session.id, None)  # revoked once
    data: dict[str, object] = {
        "session_id": session.id,
        "user": session.user,
        "host": session.host,
        "mode": session.mode.value,
        "account": session.account,
        "kind": "jump" if jump else "session",
        "reason": why,
    }
    if session.jump:
        data["jump_id"] = session.jump
    ctx.audit_soon("session.revoked", session.user, data)
    log.info("session revoked", session_id=session.id, user=session.user, reason=why)
    if session.revoke is not None:
        session.revoke(f"access revoked: {why}")
    elif not whole_connection:
        session.close()
    # else: a session that cannot say why itself (passthrough: end-to-end encrypted)
    # ends with its connection, whose disconnect message says why.
    return 1
