"""``/v1/tokens``: create, list and revoke API tokens.

Admin tokens manage anyone's tokens, of any scope; only they make ``admin``
and ``metrics`` tokens (a ``metrics`` token, for a scraper, may name a user who
is not in the inventory). A user token manages its own user's tokens and may
create ``user`` and ``ci`` ones. A ci token manages none.

A token made here is minted by the caller's token: it expires no later than
that token and is revoked with it (see ``gateway.adapters.storage.tokens``). Creation
and each revocation are audited (``token.created``, ``token.revoked``; a
revocation that reached a minted token says ``cascade_from``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from gateway.adapters.storage import Scope, Token, TokenRejected
from gateway.edges.http.auth import Caller, Ctx, UserCaller, forbid
from gateway.edges.http.errors import NOT_FOUND, ApiError
from gateway.edges.http.schemas import ErrorCode, TokenCreate, TokenCreated, TokenList, TokenOut
from gateway.errors import GatewayError

router = APIRouter(tags=["tokens"])

TokenId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]


def _audit_data(caller: Caller, token: Token) -> dict[str, object]:
    return {
        "token_id": token.id,
        "user": token.user,
        "scope": token.scope.value,
        "name": token.name,
        "expires_at": token.expires_at,
        "parent_id": token.parent_id,
        "by": caller.user,
        "by_token": caller.token.id,
        "source": caller.source,
    }


@router.post("/tokens", response_model=TokenCreated, status_code=201)
async def create_token(
    request: Request, ctx: Ctx, caller: UserCaller, body: TokenCreate
) -> TokenCreated:
    """A new token; its secret is in this response only."""
    target = body.user or caller.user
    if caller.scope is not Scope.ADMIN:
        if target != caller.user:
            await forbid(request, caller, "a user token may create tokens only for its own user")
        if body.scope in (Scope.ADMIN, Scope.METRICS):
            await forbid(request, caller, f"only an admin token may create {body.scope} tokens")
    needs_user = body.scope not in (Scope.ADMIN, Scope.METRICS)
    if needs_user and ctx.inventory.user(target) is None:
        raise ApiError(422, "invalid_request", f"user {target!r} is not in the gateway's inventory")
    try:
        token, secret = await ctx.tokens.create(
            target, body.scope, body.name, body.ttl_s, parent=caller.token
        )
    except TokenRejected as exc:  # the caller's token was revoked meanwhile
        code: ErrorCode = "token_revoked" if exc.code == "token_revoked" else "token_expired"
        raise ApiError(401, code, str(exc), {"WWW-Authenticate": "Bearer"}) from exc
    try:
        await ctx.audit.append("token.created", caller.user, _audit_data(caller, token))
    except GatewayError:
        await ctx.tokens.revoke(token.id)  # unaudited tokens must not work
        raise
    return TokenCreated(token=TokenOut.of(token, ctx.clock()), secret=secret)


@router.get("/tokens", response_model=TokenList)
async def list_tokens(
    request: Request,
    ctx: Ctx,
    caller: UserCaller,
    user: Annotated[str | None, Query(max_length=64)] = None,
) -> TokenList:
    """The caller's tokens (admins: everyone's, or ``user``'s), without secrets."""
    if caller.scope is not Scope.ADMIN:
        if user is not None and user != caller.user:
            await forbid(request, caller, "only an admin token may list other users' tokens")
        user = caller.user
    now = ctx.clock()
    return TokenList(tokens=[TokenOut.of(t, now) for t in await ctx.tokens.list(user)])


@router.delete("/tokens/{token_id}", response_model=TokenOut, responses=NOT_FOUND)
async def revoke_token(ctx: Ctx, caller: UserCaller, token_id: TokenId) -> TokenOut:
    """Revoke a token at once (idempotent). A token may revoke itself."""
    token = await ctx.tokens.get(token_id)
    if token is None or (caller.scope is not Scope.ADMIN and token.user != caller.user):
        raise ApiError(404, "not_found", "no such token")
    tree = await ctx.tokens.revoke_tree(token_id)
    assert tree is not None  # tokens are never deleted
    revoked, minted = tree
    if token.revoked_at is None:
        await ctx.audit.append("token.revoked", caller.user, _audit_data(caller, revoked))
    for child in minted:
        data = {**_audit_data(caller, child), "cascade_from": token_id}
        await ctx.audit.append("token.revoked", caller.user, data)
    return TokenOut.of(revoked, ctx.clock())
