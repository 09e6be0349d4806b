"""Create an API token from the gateway machine, without the API: the first admin token.

Whoever can read the gateway's config and database is already its operator,
so this needs no token. It writes the same ``token.created`` audit event the
API does (actor ``gateway-cli``). The audit store is opened before storage:
both may share one SQLite file, and the audit store must create it first.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from gateway.adapters.audit.store import open_store
from gateway.adapters.storage import Scope, StoredDirectory, Token, open_storage
from gateway.config.loader import Settings
from gateway.errors import ConfigError, GatewayError
from gateway.services.directoryview import DirectoryView

CLI_ACTOR = "gateway-cli"
DEFAULT_TTL_S = 30 * 86400
MAX_TTL_S = 365 * 86400
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class CreatedToken:
    token: Token
    secret: str  # shown once; only its hash is stored


def check_request(
    settings: Settings, user: str, scope: Scope, ttl_s: float, stored: StoredDirectory | None = None
) -> None:
    """``ConfigError`` (one line) unless the token may be created.

    ``user`` and ``ci`` tokens act as a directory user (declared in the config
    file or added by an admin, in ``stored``), so the user must exist; an
    ``admin`` or ``metrics`` token may name an operator or a scraper with no SSH access.
    """
    if not _USER.fullmatch(user):
        raise ConfigError(f"--user: {user!r} is not a user name")
    known = DirectoryView.build(settings, stored).users
    if scope not in (Scope.ADMIN, Scope.METRICS) and user not in known:
        raise ConfigError(
            f"--user: {user!r} is not declared in [[users]] nor added with "
            f"`admin users add` (needed for {scope})"
        )
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ConfigError(f"--ttl: must be between 1s and {MAX_TTL_S}s")


async def create_token(
    settings: Settings,
    *,
    user: str,
    scope: Scope,
    name: str = "cli",
    ttl_s: float = DEFAULT_TTL_S,
) -> CreatedToken:
    """Store a token for ``user`` and audit it; the secret is in the result only."""
    scope = Scope(scope)
    url = settings.gateway.storage_url.get_secret_value()
    audit = await asyncio.to_thread(open_store, url)
    try:
        storage = await open_storage(url)
        try:
            check_request(settings, user, scope, ttl_s, await storage.directory.load())
            try:
                token, secret = await storage.tokens.create(user, scope, name, ttl_s)
            except ValueError as exc:
                raise ConfigError(f"--name: {exc}") from None
            data: dict[str, object] = {
                "token_id": token.id,
                "user": user,
                "scope": scope.value,
                "name": name,
                "expires_at": token.expires_at,
                "by": CLI_ACTOR,
            }
            try:
                await audit.append("token.created", CLI_ACTOR, data)
            except GatewayError:
                await storage.tokens.revoke(token.id)  # unaudited tokens must not work
                raise
            return CreatedToken(token, secret)
        finally:
            await storage.close()
    finally:
        await audit.close()


def create_token_blocking(
    settings: Settings,
    *,
    user: str,
    scope: Scope,
    name: str = "cli",
    ttl_s: float = DEFAULT_TTL_S,
) -> CreatedToken:
    """``create_token`` for a synchronous CLI command."""
    return asyncio.run(create_token(settings, user=user, scope=scope, name=name, ttl_s=ttl_s))
