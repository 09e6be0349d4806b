"""An in-memory ``AuditStore`` for unit tests: same chain maths, nothing durable.

Open it with ``open_store("memory://")``; tests may edit ``events`` to simulate tampering.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Mapping

from gateway.domain.audit.chain import (
    GENESIS,
    AuditEvent,
    VerifyResult,
    event_hash,
    freeze_data,
    verify_events,
)
from gateway.errors import StorageError


class MemoryAuditStore:
    """Keeps the chain in a list; ``append`` is "durable" as soon as it returns."""

    def __init__(self) -> None:
        self.events: builtins.list[AuditEvent] = []
        self._closed = False

    async def append(self, kind: str, actor: str, data: Mapping[str, object]) -> AuditEvent:
        if self._closed:
            raise StorageError("audit store is closed")
        data_text, frozen = freeze_data(data)
        last = self.events[-1] if self.events else None
        event_id = last.id + 1 if last else 1
        prev = last.hash if last else GENESIS
        ts = time.time()
        digest = event_hash(prev, event_id, ts, kind, actor, data_text)
        event = AuditEvent(event_id, ts, kind, actor, frozen, prev, digest)
        self.events.append(event)
        return event

    async def list(
        self,
        *,
        kind: str | None = None,
        actor: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> builtins.list[AuditEvent]:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        out: builtins.list[AuditEvent] = []
        for event in self.events:
            if len(out) >= limit:
                break
            if event.id <= after_id:
                continue
            if kind is not None and event.kind != kind:
                continue
            if actor is not None and event.actor != actor:
                continue
            out.append(event)
        return out

    async def verify(self) -> VerifyResult:
        return verify_events(self.events)

    async def close(self) -> None:
        self._closed = True
