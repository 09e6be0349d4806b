"""Gateway replicas in storage: who is running, seen how recently.

Every gateway process registers one row at start (``replica``: its node name
plus an id of this process start) and renews its heartbeat every
``timeout_s / 3`` (``gateway.replication``); a replica whose heartbeat is
older than ``timeout_s`` is dead. What a replica holds in storage (GPU leases,
running costs) counts only while it is alive, so a replica killed with
``kill -9`` loses its leases within ``timeout_s`` without anyone cleaning up
after it; the first other replica to notice claims it and closes its sessions.
"""

from __future__ import annotations

import builtins
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.adapters.storage.engine import Database
from gateway.adapters.storage.schema import gateway_replicas as t
from gateway.adapters.storage.schema import gpu_leases, live_costs

REPLICA_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Replica:
    replica: str
    node: str
    started_at: float
    heartbeat_at: float


class ReplicaStore:
    """This process's row in ``gateway_replicas``, and questions about the others."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], float] = time.time,
        node: str = "",
        timeout_s: float = REPLICA_TIMEOUT_S,
    ) -> None:
        self._db = db
        self._clock = clock
        self.node = node
        self.replica = f"{node}/{os.getpid()}/{secrets.token_hex(4)}"
        self.timeout_s = timeout_s
        self._registered = False

    @property
    def owner(self) -> str:
        """What this process stamps on the sessions it starts: its replica id once it has
        registered (a gateway), else "" (a command-line tool owns no sessions)."""
        return self.replica if self._registered else ""

    def alive(self, now: float) -> sa.Select[tuple[str]]:
        """Ids of the replicas alive at ``now``, as a subquery for other stores."""
        return sa.select(t.c.replica).where(t.c.heartbeat_at >= now - self.timeout_s)

    def now(self) -> float:
        return self._clock()

    async def heartbeat(self) -> None:
        """Register this replica, or renew its heartbeat."""
        now = self._clock()

        def run(conn: Connection) -> None:
            renewed = conn.execute(
                t.update().where(t.c.replica == self.replica).values(heartbeat_at=now)
            ).rowcount
            if not renewed:
                conn.execute(
                    t.insert().values(
                        replica=self.replica, node=self.node, started_at=now, heartbeat_at=now
                    )
                )

        await self._db.write(run)
        self._registered = True

    async def claim_lost(self) -> builtins.list[Replica]:
        """Take over the replicas whose heartbeat is older than the timeout: their rows go,
        with their leases and meters, and they are returned, each to one claimer only
        (the one whose delete removed the row), which then closes their sessions."""
        now = self._clock()

        def run(conn: Connection) -> builtins.list[Replica]:
            stale = sa.select(t).where(
                t.c.heartbeat_at < now - self.timeout_s, t.c.replica != self.replica
            )
            claimed = []
            for r in conn.execute(stale).all():
                if conn.execute(t.delete().where(t.c.replica == r.replica)).rowcount:
                    claimed.append(Replica(r.replica, r.node, r.started_at, r.heartbeat_at))
            gone = [r.replica for r in claimed]
            conn.execute(gpu_leases.delete().where(gpu_leases.c.replica.in_(gone)))
            conn.execute(live_costs.delete().where(live_costs.c.replica.in_(gone)))
            return claimed

        return await self._db.write(run)

    async def retire(self) -> None:
        """Leave at a clean shutdown: this replica's row, its leases and meters go."""

        def run(conn: Connection) -> None:
            conn.execute(gpu_leases.delete().where(gpu_leases.c.replica == self.replica))
            conn.execute(live_costs.delete().where(live_costs.c.replica == self.replica))
            conn.execute(t.delete().where(t.c.replica == self.replica))

        await self._db.write(run)

    async def list(self) -> builtins.list[Replica]:
        rows = await self._db.read(lambda conn: conn.execute(sa.select(t)).all())
        return [Replica(r.replica, r.node, r.started_at, r.heartbeat_at) for r in rows]
