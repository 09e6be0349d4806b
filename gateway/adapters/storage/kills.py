"""Kill requests in storage: a kill asked of one replica for a session another runs.

The API of any replica answers a kill of a live session it does not run by
writing a row naming the session and the replica that runs it (from the
session record); that replica polls for its rows (``pending``), ends the
session and deletes the row (``done``).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.adapters.storage.engine import Database
from gateway.adapters.storage.replicas import ReplicaStore
from gateway.adapters.storage.schema import session_kills as t
from gateway.adapters.storage.sessions import SessionRecord


class SessionKillStore:
    """Rows of ``session_kills``: asked by anyone, answered by the owning replica."""

    def __init__(
        self, db: Database, replicas: ReplicaStore, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._replicas = replicas
        self._clock = clock

    def elsewhere(self, record: SessionRecord) -> bool:
        """Whether ``record`` is a live session another replica runs (one a kill request
        can reach)."""
        return record.live and record.replica not in ("", self._replicas.replica)

    async def request(self, record: SessionRecord, by: str) -> None:
        """Ask the replica running ``record`` to end it; asking twice is one request."""
        row = {
            "session_id": record.id,
            "replica": record.replica,
            "requested_at": self._clock(),
            "requested_by": by,
        }

        def run(conn: Connection) -> None:
            asked = sa.select(t.c.session_id).where(t.c.session_id == record.id)
            if conn.execute(asked).first() is None:
                conn.execute(t.insert().values(**row))

        await self._db.write(run)

    async def pending(self) -> builtins.list[str]:
        """Sessions this replica is asked to end, oldest request first."""
        query = (
            sa.select(t.c.session_id)
            .where(t.c.replica == self._replicas.replica)
            .order_by(t.c.requested_at)
        )
        return list(await self._db.read(lambda conn: conn.execute(query).scalars().all()))

    async def done(self, session_ids: builtins.list[str]) -> None:
        where = t.c.session_id.in_(session_ids)
        await self._db.write(lambda conn: conn.execute(t.delete().where(where)))
