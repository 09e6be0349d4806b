"""GPU leases in SQL: shared by every replica on the database.

The ``LeaseStore`` port of ``gateway.domain.inventory.leases``. A row of
``gpu_leases`` says: replica R uses GPU g of host h for lease L (a session, or
one user's passthrough hold, which several replicas may share). The rule that
makes leases exclusive: every live row of one ``(host, gpu)`` names the same
lease. ``insert`` keeps it inside one transaction that holds the host's lock
(``pg_advisory_xact_lock`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` lets one
writer in at a time), so two replicas claiming one GPU at the same moment are
serialised and the second answers False. A row counts only while its replica
is alive (``ReplicaStore``); ``insert`` first deletes the host's rows of dead
replicas.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.adapters.storage.engine import Database
from gateway.adapters.storage.replicas import ReplicaStore
from gateway.adapters.storage.schema import gpu_leases as t
from gateway.domain.inventory.leases import Lease

LOCK_SPACE: Final = 0x6770_6C73  # first key of the per-host advisory locks ("gpls")


def _group(rows: Iterable[Any]) -> tuple[Lease, ...]:
    by_id: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        by_id.setdefault((row.host, row.session_id), []).append(row)
    return tuple(
        Lease(host, sid, tuple(sorted({r.gpu for r in held})), min(r.acquired_at for r in held))
        for (host, sid), held in by_id.items()
    )


def _lock_host(conn: Connection, host: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:host))"),
            {"space": LOCK_SPACE, "host": host},
        )


class SqlLeaseStore:
    """A ``LeaseStore`` in the ``gpu_leases`` table, used by ``replicas.replica``."""

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
        """Store ``lease`` for this replica; False if one of its GPUs is live under another
        lease, or this replica already uses the lease. Rows of the same lease from other
        replicas are no conflict: that is how a passthrough hold is shared."""
        me = self._replicas.replica
        rows = [
            {
                "host": lease.host,
                "gpu": gpu,
                "session_id": lease.session_id,
                "replica": me,
                "acquired_at": lease.acquired_at,
            }
            for gpu in lease.gpus
        ]

        def run(conn: Connection) -> bool:
            _lock_host(conn, lease.host)
            alive = self._replicas.alive(self._replicas.now())
            conn.execute(t.delete().where(t.c.host == lease.host, t.c.replica.not_in(alive)))
            on_host = t.c.host == lease.host
            other = sa.and_(on_host, t.c.gpu.in_(lease.gpus), t.c.session_id != lease.session_id)
            again = sa.and_(on_host, t.c.session_id == lease.session_id, t.c.replica == me)
            if conn.execute(sa.select(t.c.gpu).where(sa.or_(other, again)).limit(1)).first():
                return False
            conn.execute(t.insert(), rows)
            return True

        return await self._db.write(run)

    async def delete(self, lease_ids: Iterable[str]) -> tuple[Lease, ...]:
        """End this replica's use of these leases (other replicas' shares stay)."""
        where = sa.and_(
            (t.c.host + "/" + t.c.session_id).in_(list(lease_ids)),  # Lease.lease_id
            t.c.replica == self._replicas.replica,
        )

        def run(conn: Connection) -> list[Any]:
            found = list(conn.execute(sa.select(t).where(where)).all())
            conn.execute(t.delete().where(where))
            return found

        return _group(await self._db.write(run))
