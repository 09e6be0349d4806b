"""API tokens: created once, stored hashed, scoped, expiring, revocable.

A secret is ``gph_`` plus 43 URL-safe characters (256 random bits). Only its
SHA-256 is stored: the secret is high-entropy, so a fast hash is enough, and a
unique index on it makes ``verify`` one lookup. The secret is returned once,
by ``create``, and never again.

Tokens never outlive the token that minted them: a token made with another
(``parent``) expires no later than it, and revoking a token revokes every token
it minted, and theirs, in the same transaction. Minting re-reads the parent
inside its write transaction (row-locked on PostgreSQL), so a child cannot slip
in beside a revocation.

Refusals form one branch of the gateway's exception tree::

    GatewayError
    └── TokenRejected        code: token_unknown
        ├── TokenExpired     code: token_expired
        └── TokenRevoked     code: token_revoked
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.adapters.storage.engine import Database
from gateway.adapters.storage.schema import api_tokens
from gateway.errors import GatewayError

SECRET_PREFIX = "gph_"  # noqa: S105  (a prefix, not a secret)
LAST_USED_EVERY_S = 60.0  # how stale last_used_at may get: saves a write per request
_SECRET = re.compile(r"gph_[A-Za-z0-9_-]{43}")
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,64}")


TokenState = Literal["active", "expired", "revoked"]


class Scope(StrEnum):
    """What a token may do: ``user`` (a person), ``ci`` (a runner), ``admin`` (everything),
    ``metrics`` (scrape ``/metrics``, nothing else)."""

    USER = "user"
    CI = "ci"
    ADMIN = "admin"
    METRICS = "metrics"


class TokenRejected(GatewayError):
    """A bearer secret that may not be used; ``code`` is the API error code."""

    code = "token_unknown"

    def __init__(self, message: str, token: Token | None = None) -> None:
        super().__init__(message)
        self.token = token


class TokenExpired(TokenRejected):
    code = "token_expired"


class TokenRevoked(TokenRejected):
    code = "token_revoked"


@dataclass(frozen=True, slots=True)
class Token:
    """A stored token, without its secret."""

    id: str
    user: str
    scope: Scope
    name: str
    created_at: float
    expires_at: float
    revoked_at: float | None = None
    last_used_at: float | None = None
    parent_id: str | None = None
    """The token this one was minted with; None when an operator made it."""

    def state(self, now: float) -> TokenState:
        """``revoked``, ``expired`` or ``active`` at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _token(row: Any) -> Token:
    return Token(
        id=row.id,
        user=row.user,
        scope=Scope(row.scope),
        name=row.name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        parent_id=row.parent_id,
    )


_COLUMNS = [c for c in api_tokens.c if c.name != "token_hash"]


class TokenStore:
    """Tokens in the ``api_tokens`` table; ``clock`` is injectable for expiry tests."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def create(
        self, user: str, scope: Scope, name: str, ttl_s: float, parent: Token | None = None
    ) -> tuple[Token, str]:
        """Store a new token and return it with its secret (shown once, never stored).

        With ``parent`` (the token the request came with) the new token expires no
        later than the parent and is revoked with it; ``TokenRejected`` when the
        parent is no longer usable by the time the row is written.

        >>> import asyncio
        >>> from gateway.adapters.storage import open_storage
        >>> async def main() -> tuple[str, bool]:
        ...     storage = await open_storage("memory://")
        ...     token, secret = await storage.tokens.create("alice", Scope.CI, "runner", 3600)
        ...     same = await storage.tokens.verify(secret)
        ...     await storage.close()
        ...     return secret[:4], same.id == token.id
        >>> asyncio.run(main())
        ('gph_', True)
        """
        scope = Scope(scope)
        if not user:
            raise ValueError("a token needs a user")
        if not _NAME.fullmatch(name):
            raise ValueError("token name must be 1-64 printable characters")
        if not ttl_s > 0:
            raise ValueError("token lifetime must be positive")
        now = self._clock()
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        parent_id = parent.id if parent is not None else None
        token = Token(
            secrets.token_hex(8), user, scope, name, now, now + ttl_s, parent_id=parent_id
        )
        row = {
            "id": token.id,
            "user": user,
            "scope": scope.value,
            "name": name,
            "token_hash": hash_secret(secret),
            "created_at": token.created_at,
            "expires_at": token.expires_at,
            "parent_id": parent_id,
        }

        def insert(conn: Connection) -> Token:
            minted = token
            if parent_id is not None:
                query = sa.select(*_COLUMNS).where(api_tokens.c.id == parent_id).with_for_update()
                found = conn.execute(query).first()
                if found is None:
                    raise TokenRejected("the token minting this one is unknown")
                current = _token(found)
                if current.revoked_at is not None:
                    raise TokenRevoked(f"token {current.id} was revoked", current)
                if now >= current.expires_at:
                    raise TokenExpired(f"token {current.id} expired", current)
                if current.expires_at < minted.expires_at:
                    minted = dataclasses.replace(minted, expires_at=current.expires_at)
            conn.execute(api_tokens.insert().values(**{**row, "expires_at": minted.expires_at}))
            return minted

        return await self._db.write(insert), secret

    async def verify(self, secret: str) -> Token:
        """The token a bearer secret names, if usable now; ``TokenRejected`` (or a subclass) if not.

        >>> import asyncio
        >>> from gateway.adapters.storage import open_storage
        >>> async def main() -> str:
        ...     storage = await open_storage("memory://")
        ...     token, secret = await storage.tokens.create("bob", Scope.USER, "laptop", 60)
        ...     await storage.tokens.revoke(token.id)
        ...     try:
        ...         await storage.tokens.verify(secret)
        ...     except TokenRejected as exc:
        ...         return exc.code
        ...     finally:
        ...         await storage.close()
        ...     return "accepted"
        >>> asyncio.run(main())
        'token_revoked'
        """
        if not _SECRET.fullmatch(secret):
            raise TokenRejected("not a gpuhop API token")
        digest = hash_secret(secret)
        query = sa.select(*_COLUMNS).where(api_tokens.c.token_hash == digest)
        row = await self._db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise TokenRejected("unknown token")
        token = _token(row)
        now = self._clock()
        if token.revoked_at is not None:
            raise TokenRevoked(f"token {token.id} was revoked", token)
        if now >= token.expires_at:
            raise TokenExpired(f"token {token.id} expired", token)
        if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY_S:
            stamp = api_tokens.update().where(api_tokens.c.id == token.id).values(last_used_at=now)
            await self._db.write(lambda conn: conn.execute(stamp))
            token = dataclasses.replace(token, last_used_at=now)
        return token

    async def get(self, token_id: str) -> Token | None:
        query = sa.select(*_COLUMNS).where(api_tokens.c.id == token_id)
        row = await self._db.read(lambda conn: conn.execute(query).first())
        return None if row is None else _token(row)

    async def revoke(self, token_id: str) -> Token | None:
        """Revoke a token and all it minted (idempotent: the first revocation time stays);
        None if unknown. ``revoke_tree`` also says which descendants it revoked."""
        revoked = await self.revoke_tree(token_id)
        return None if revoked is None else revoked[0]

    async def revoke_tree(self, token_id: str) -> tuple[Token, builtins.list[Token]] | None:
        """Revoke ``token_id`` and every live token minted from it, at any depth, in one
        transaction; the token and the descendants this call revoked (None if unknown).

        Each round revokes at least one live token, so the walk ends within as many
        rounds as there are tokens.
        """
        now = self._clock()

        def run(conn: Connection) -> tuple[Any, builtins.list[Any]]:
            conn.execute(
                api_tokens.update()
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            root = conn.execute(sa.select(*_COLUMNS).where(api_tokens.c.id == token_id)).first()
            descendants: builtins.list[Any] = []
            frontier = [token_id] if root is not None else []
            while frontier:
                live = sa.select(*_COLUMNS).where(
                    api_tokens.c.parent_id.in_(frontier), api_tokens.c.revoked_at.is_(None)
                )
                children = conn.execute(live).all()
                frontier = [c.id for c in children]
                if frontier:
                    conn.execute(
                        api_tokens.update()
                        .where(api_tokens.c.id.in_(frontier))
                        .values(revoked_at=now)
                    )
                    descendants += children
            return root, descendants

        root, descendants = await self._db.write(run)
        if root is None:
            return None
        revoked = [dataclasses.replace(_token(r), revoked_at=now) for r in descendants]
        return _token(root), revoked

    async def list(self, user: str | None = None) -> builtins.list[Token]:
        """Tokens (revoked and expired included), oldest first; all users when ``user`` is None."""
        query = sa.select(*_COLUMNS).order_by(api_tokens.c.created_at, api_tokens.c.id)
        if user is not None:
            query = query.where(api_tokens.c.user == user)
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return [_token(r) for r in rows]
