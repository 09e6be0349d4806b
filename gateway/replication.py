"""What each gateway replica does for the others, on one schedule.

Every ``poll_s`` (1 s) a replica ends the sessions other replicas' APIs asked
it to kill (``session_kills``); every third of ``replica_timeout_s`` it renews
its heartbeat and claims the replicas whose heartbeat stopped, closing their
open session records: audited ``session.end`` with ``error`` ``replica lost``,
ended at the dead replica's last heartbeat (a lower bound, so nobody is charged
for time after it died), GPU time costed at the host's rate. A failed round is
logged and tried again at the next one; the loop runs until cancelled.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Callable

import structlog

from gateway.adapters.storage import Replica, SessionRecord, Storage
from gateway.domain.metering.meter import Rate
from gateway.errors import StorageError
from gateway.ports import AuditStore
from gateway.services.reconcile import REPLICA_LOST, close_orphans

log = structlog.get_logger("gpuhop.replication")

POLL_S = 1.0


class ReplicaDuties:
    def __init__(
        self,
        storage: Storage,
        audit: AuditStore,
        *,
        rate_of: Callable[[str], Rate | None],
        kill: Callable[[str], bool],
        audit_timeout_s: float = 10.0,
        poll_s: float = POLL_S,
    ) -> None:
        self._storage = storage
        self._audit = audit
        self._rate_of = rate_of
        self._kill = kill
        self._audit_timeout_s = audit_timeout_s
        self._poll_s = poll_s

    async def run(self) -> None:
        beat_every = self._storage.replicas.timeout_s / 3
        next_beat = time.monotonic() + beat_every  # the gateway beat once at start
        while True:
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + beat_every
                    await self._storage.replicas.heartbeat()
                    await self.close_lost()
                await self.answer_kills()
            except StorageError as exc:
                log.error("replica duties failed; retrying", error=str(exc))
            await asyncio.sleep(self._poll_s)

    async def close_lost(self) -> builtins.list[SessionRecord]:
        """Claim the dead replicas and close their open sessions; returns those closed."""
        closed: builtins.list[SessionRecord] = []
        for lost in await self._storage.replicas.claim_lost():
            closed.extend(
                await close_orphans(
                    self._storage.sessions,
                    self._audit,
                    rate_of=self._rate_of,
                    last_seen=_heartbeat_of(lost),
                    owned=_run_by(lost),
                    audit_timeout_s=self._audit_timeout_s,
                    error=REPLICA_LOST,
                )
            )
            log.warning("replica lost", replica=lost.replica, sessions=len(closed))
        return closed

    async def answer_kills(self) -> builtins.list[str]:
        """End the sessions other replicas were asked to kill; returns those ended here."""
        asked = await self._storage.kills.pending()
        if not asked:
            return []
        ended = [session_id for session_id in asked if self._kill(session_id)]
        await self._storage.kills.done(asked)  # one not running here has ended already
        return ended


def _heartbeat_of(lost: Replica) -> Callable[[SessionRecord], float]:
    return lambda _record: lost.heartbeat_at


def _run_by(lost: Replica) -> Callable[[SessionRecord], bool]:
    return lambda record: record.replica == lost.replica
