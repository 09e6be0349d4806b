"""Identity and accounting storage: API tokens, session records and the directory, in SQL.

Open it once at start-up from the storage URL, after the audit store when both
share a SQLite file::

    storage = await open_storage(settings.gateway.storage_url.get_secret_value())
    token, secret = await storage.tokens.create("alice", Scope.USER, "laptop", 86400)
    ...
    await storage.close()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.adapters.storage.directory import DirectoryStore, StoredDirectory
from gateway.adapters.storage.engine import Database, open_database, parse_storage_url
from gateway.adapters.storage.kills import SessionKillStore
from gateway.adapters.storage.leases import SqlLeaseStore
from gateway.adapters.storage.livecosts import LiveCost, LiveCostStore
from gateway.adapters.storage.replicas import REPLICA_TIMEOUT_S, Replica, ReplicaStore
from gateway.adapters.storage.schema import SCHEMA_VERSION, ensure_schema
from gateway.adapters.storage.sessions import SessionRecord, SessionStore
from gateway.adapters.storage.tokens import (
    SECRET_PREFIX,
    Scope,
    Token,
    TokenExpired,
    TokenRejected,
    TokenRevoked,
    TokenState,
    TokenStore,
)

__all__ = [
    "REPLICA_TIMEOUT_S",
    "SCHEMA_VERSION",
    "SECRET_PREFIX",
    "Database",
    "DirectoryStore",
    "LiveCost",
    "LiveCostStore",
    "Replica",
    "ReplicaStore",
    "Scope",
    "SessionKillStore",
    "SessionRecord",
    "SessionStore",
    "SqlLeaseStore",
    "Storage",
    "StoredDirectory",
    "Token",
    "TokenExpired",
    "TokenRejected",
    "TokenRevoked",
    "TokenState",
    "TokenStore",
    "open_storage",
    "open_storage_blocking",
    "parse_storage_url",
]


@dataclass(frozen=True, slots=True)
class Storage:
    """The stores sharing one database."""

    db: Database
    tokens: TokenStore
    sessions: SessionStore
    directory: DirectoryStore
    replicas: ReplicaStore
    leases: SqlLeaseStore
    live_costs: LiveCostStore
    kills: SessionKillStore

    async def ping(self) -> None:
        """One round trip to the database, without retries (readiness); ``StorageError`` if not."""
        await asyncio.to_thread(self.db.run, _select_one, False)

    async def close(self) -> None:
        await self.db.close()


def _select_one(conn: Connection) -> None:
    conn.execute(sa.text("SELECT 1"))


def open_storage_blocking(
    url: str,
    clock: Callable[[], float] = time.time,
    node: str = "",
    replica_timeout_s: float = REPLICA_TIMEOUT_S,
) -> Storage:
    """Open (creating or checking the schema) without an event loop; for start-up code.

    ``node`` names this gateway node on the session records it starts and on its
    replica row; a replica silent for ``replica_timeout_s`` is dead."""
    db = open_database(url)
    try:
        db.run(lambda conn: ensure_schema(conn, db.label), True)
    except BaseException:
        db.engine.dispose()
        raise
    replicas = ReplicaStore(db, clock, node, replica_timeout_s)
    sessions = SessionStore(db, clock, node, replicas)
    return Storage(
        db,
        TokenStore(db, clock),
        sessions,
        DirectoryStore(db, clock),
        replicas,
        SqlLeaseStore(db, replicas),
        LiveCostStore(db, replicas),
        SessionKillStore(db, replicas, clock),
    )


async def open_storage(
    url: str,
    clock: Callable[[], float] = time.time,
    node: str = "",
    replica_timeout_s: float = REPLICA_TIMEOUT_S,
) -> Storage:
    """Open the storage a URL names, off the event loop.

    ``ConfigError`` for a URL it does not understand; ``StorageError`` when the
    database cannot be opened or holds a schema version this code does not know.
    """
    return await asyncio.to_thread(open_storage_blocking, url, clock, node, replica_timeout_s)
