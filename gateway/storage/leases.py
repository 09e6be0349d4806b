"""GPU leases in SQL: one row per leased GPU, shared by every replica on the database.

The ``LeaseStore`` port of ``gateway.inventory.leases``. ``gpu_leases`` has the
primary key ``(host, gpu)``: ``insert`` writes all of a lease's rows in one
transaction, so when two replicas claim one GPU at the same moment the
database lets one commit and the other fails on the key (PostgreSQL makes the
second wait for the first, then raises; SQLite serialises writers), and that
one answers False. A row counts only while its replica is alive
(``ReplicaStore``); ``insert`` first deletes the host's rows of dead replicas.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway.inventory.leases import Lease
from gateway.storage.engine import Database
from gateway.storage.replicas import ReplicaStore
from gateway.storage.schema import gpu_leases as t


def _group(rows: Iterable[Any]) -> tuple[Lease, ...]:
    by_id: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        by_id.setdefault((row.host, row.session_id), []).append(row)
    return tuple(
        Lease(host, sid, tuple(sorted(r.gpu for r in held)), min(r.acquired_at for r in held))
        for (host, sid), held in by_id.items()
    )


class SqlLeaseStore:
    """A ``LeaseStore`` in the ``gpu_leases`` table, held by ``replicas.replica``."""

    def __init__(self, db: Database, replicas: ReplicaStore) -> None:
        self._db = db
        self._replicas = replicas

    async def leases(self, host: str | None = None) -> tuple[Lease, ...]:
        def run(conn: Connection) -> list[Any]:
            query = sa.select(t).where(t.c.replica.in_(self._replicas.alive(self._replicas.now())))
            if host is not None:
                query = query.where(t.c.host == host)
            return list(conn.execute(query).all())

        return _group(await self._db.read(run))

    async def insert(self, lease: Lease) -> bool:
        rows = [
            {
                "host": lease.host,
                "gpu": gpu,
                "session_id": lease.session_id,
                "replica": self._replicas.replica,
                "acquired_at": lease.acquired_at,
            }
            for gpu in lease.gpus
        ]

        def run(conn: Connection) -> bool:
            alive = self._replicas.alive(self._replicas.now())
            conn.execute(t.delete().where(t.c.host == lease.host, t.c.replica.not_in(alive)))
            mine = sa.select(t.c.gpu).where(
                t.c.host == lease.host, t.c.session_id == lease.session_id
            )
            if conn.execute(mine.limit(1)).first() is not None:
                return False
            try:
                with conn.begin_nested():
                    conn.execute(t.insert(), rows)
            except IntegrityError:
                return False  # a GPU is held: another replica claimed it first
            return True

        return await self._db.write(run)

    async def delete(self, lease_ids: Iterable[str]) -> tuple[Lease, ...]:
        where = (t.c.host + "/" + t.c.session_id).in_(list(lease_ids))  # Lease.lease_id

        def run(conn: Connection) -> list[Any]:
            found = list(conn.execute(sa.select(t).where(where)).all())
            conn.execute(t.delete().where(where))
            return found

        return _group(await self._db.write(run))
