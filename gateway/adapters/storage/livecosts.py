"""Running costs in storage: every replica's live meters, readable by all.

A meter (a session, or a passthrough GPU hold) that costs by the hour writes
one row at its start (``started_at``, ``usd_per_hour``) and deletes it at its
end, when its final cost goes to the session record. A budget check on any
replica adds ``usd_per_hour * elapsed`` of the other replicas' rows to what it
knows itself, so a user's spend is one number whichever replica asks. Rows of
a dead replica (``ReplicaStore``) do not count; closing its sessions turns
them into final costs.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.adapters.storage.engine import Database
from gateway.adapters.storage.replicas import ReplicaStore
from gateway.adapters.storage.schema import live_costs as t
from gateway.domain.metering.meter import gpu_cost


@dataclass(frozen=True, slots=True)
class LiveCost:
    meter_id: str
    user: str
    replica: str
    started_at: float
    usd_per_hour: float

    def running(self, now: float) -> float:
        """What it has cost from its start to ``now``, in USD."""
        return gpu_cost(1, self.usd_per_hour, now - self.started_at)


class LiveCostStore:
    """Rows of ``live_costs``; this replica's are stamped ``replicas.replica``."""

    def __init__(self, db: Database, replicas: ReplicaStore) -> None:
        self._db = db
        self._replicas = replicas

    async def start(self, meter_id: str, user: str, started_at: float, usd_per_hour: float) -> None:
        row = {
            "meter_id": meter_id,
            "user": user,
            "replica": self._replicas.replica,
            "started_at": started_at,
            "usd_per_hour": usd_per_hour,
        }
        await self._db.write(lambda conn: conn.execute(t.insert().values(**row)))

    async def stop(self, meter_id: str) -> None:
        where = sa.and_(t.c.meter_id == meter_id, t.c.replica == self._replicas.replica)
        await self._db.write(lambda conn: conn.execute(t.delete().where(where)))

    async def elsewhere(self, users: Collection[str]) -> list[LiveCost]:
        """The live meters of ``users`` on the other replicas that are alive."""

        def run(conn: Connection) -> list[LiveCost]:
            alive = self._replicas.alive(self._replicas.now())
            query = sa.select(t).where(
                t.c.user.in_(list(users)),
                t.c.replica != self._replicas.replica,
                t.c.replica.in_(alive),
            )
            return [
                LiveCost(r.meter_id, r.user, r.replica, r.started_at, r.usd_per_hour)
                for r in conn.execute(query)
            ]

        return await self._db.read(run)
