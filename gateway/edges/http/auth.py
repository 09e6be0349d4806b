"""Bearer-token authentication and scope checks, as FastAPI dependencies.

Every refusal is audited: a 401 as ``api.auth_fail``, a 403 as
``api.forbidden``, each with the reason, path and source address. Failed
authentications also count in a ``FailureLimiter`` against the pair (client
address, token): the token's id when storage knows it, else the secret's first
characters, or ``anonymous`` for none. A failure under a ban is answered 429
and not audited, so a scan cannot fill the audit log (the ban itself is audited
once, as ``api.ratelimited``); a valid token is never refused by a ban, so
abuse from a shared address (a TLS proxy, NAT) locks out no one else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, NoReturn

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.adapters.storage import Scope, Token, TokenRejected
from gateway.domain.models import Principal
from gateway.domain.ratelimit import ANONYMOUS, FailureLimiter
from gateway.edges.http.context import ApiContext
from gateway.edges.http.errors import ApiError
from gateway.edges.http.schemas import ErrorCode
from gateway.errors import GatewayError

log = structlog.get_logger("gpuhop.api")

bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="gph_...",
    description="An API token: `Authorization: Bearer gph_...`.",
)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request: its token and, for inventory users, their roles."""

    token: Token
    principal: Principal | None  # None for an admin token whose user is not in the inventory
    source: str

    @property
    def user(self) -> str:
        return self.token.user

    @property
    def scope(self) -> Scope:
        return self.token.scope


def get_ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def _limiter(request: Request) -> FailureLimiter:
    limiter: FailureLimiter = request.app.state.limiter
    return limiter


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


def source_of(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else ""


async def audit_quietly(ctx: ApiContext, kind: str, actor: str, data: dict[str, object]) -> None:
    """Audit a refusal; the refusal stands even when storage is down (the error is logged)."""
    try:
        await ctx.audit.append(kind, actor, data)
    except (GatewayError, OSError) as exc:
        log.error("audit write failed", kind=kind, error=str(exc))


def subject_of(secret: str | None, token: Token | None = None) -> str:
    """What a failed authentication counts against besides the address.

    >>> subject_of(None), subject_of("gph_abcdefgh" + "x" * 35)
    ('anonymous', 'secret:gph_abcdefgh')
    """
    if token is not None:
        return f"token:{token.id}"
    if not secret:
        return ANONYMOUS
    return f"secret:{secret[:SUBJECT_CHARS]}"


SUBJECT_CHARS = 12  # "gph_" and 8 random characters: 48 bits, never enough to use


async def _unauthorized(
    request: Request,
    code: ErrorCode,
    message: str,
    subject: str,
    token: Token | None = None,
) -> NoReturn:
    ctx = get_ctx(request)
    limiter = _limiter(request)
    address = _address(request)
    quiet = limiter.banned(address, subject)
    if not quiet:
        data: dict[str, object] = {
            "reason": code,
            "detail": message,
            "method": request.method,
            "path": request.url.path,
            "source": source_of(request),
        }
        if token is not None:
            data.update(token_id=token.id, user=token.user)
        await audit_quietly(ctx, "api.auth_fail", token.user if token else ANONYMOUS, data)
    if limiter.record_failure(address, subject):
        ban: dict[str, object] = {"source": address, "subject": subject}
        await audit_quietly(ctx, "api.ratelimited", ANONYMOUS, ban)
    if quiet:
        raise ApiError(429, "rate_limited", "too many failed authentications; try again later")
    raise ApiError(401, code, message, {"WWW-Authenticate": "Bearer"})


async def forbid(request: Request, caller: Caller, reason: str) -> NoReturn:
    """Refuse an authenticated caller with 403 ``forbidden``, audited with ``reason``."""
    data: dict[str, object] = {
        "reason": reason,
        "method": request.method,
        "path": request.url.path,
        "source": caller.source,
        "token_id": caller.token.id,
        "scope": caller.scope.value,
    }
    await audit_quietly(get_ctx(request), "api.forbidden", caller.user, data)
    raise ApiError(403, "forbidden", reason)


# TokenRejected.code values, as API error codes.
_CODES: dict[str, ErrorCode] = {
    "token_unknown": "token_unknown",
    "token_expired": "token_expired",
    "token_revoked": "token_revoked",
}


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The caller a bearer token names, or a 401 (audited) / 429 (a failure under a ban)."""
    ctx = get_ctx(request)
    if credentials is None:
        message = "send Authorization: Bearer gph_..."
        await _unauthorized(request, "token_missing", message, ANONYMOUS)
    secret = credentials.credentials
    try:
        token = await ctx.tokens.verify(secret)
    except TokenRejected as exc:
        code = _CODES.get(exc.code, "token_unknown")
        await _unauthorized(request, code, str(exc), subject_of(secret, exc.token), exc.token)
    user = ctx.inventory.user(token.user)
    if user is None and token.scope not in (Scope.ADMIN, Scope.METRICS):
        message = f"user {token.user!r} is no longer declared in the gateway's inventory"
        await _unauthorized(request, "user_unknown", message, subject_of(secret, token), token)
    _limiter(request).record_success(_address(request), subject_of(secret, token))
    principal = None
    source = source_of(request)
    if user is not None:
        roles = ctx.inventory.roles_of(user)
        principal = Principal(user=user.name, roles=roles, team=user.team, source=source)
    return Caller(token, principal, source)


def require(*scopes: Scope) -> Callable[..., Awaitable[Caller]]:
    """A dependency admitting callers whose token has one of ``scopes`` (403 otherwise)."""
    allowed = frozenset(scopes)
    names = " or ".join(s.value for s in scopes)

    async def dependency(
        request: Request, caller: Annotated[Caller, Depends(authenticate)]
    ) -> Caller:
        if caller.scope not in allowed:
            await forbid(request, caller, f"needs a {names} token; this one is {caller.scope}")
        return caller

    return dependency


#: Any token of the JSON API; a ``metrics`` token only scrapes ``/metrics``.
AnyCaller = Annotated[Caller, Depends(require(Scope.USER, Scope.CI, Scope.ADMIN))]
UserCaller = Annotated[Caller, Depends(require(Scope.USER, Scope.ADMIN))]
AdminCaller = Annotated[Caller, Depends(require(Scope.ADMIN))]
Ctx = Annotated[ApiContext, Depends(get_ctx)]
