"""The writer-thread pieces both database audit stores share
(gateway/adapters/audit/delivery.py)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from types import MappingProxyType

import pytest

from gateway.adapters.audit.delivery import deliver, link_batch, to_event
from gateway.domain.audit.chain import GENESIS, AuditEvent, freeze_data, verify_rows
from gateway.domain.audit.checkpoint import Checkpoint


@dataclass
class _Queued:
    kind: str
    actor: str
    data_text: str
    data: MappingProxyType[str, object]


def _queued(n: int) -> list[_Queued]:
    out = []
    for i in range(n):
        text, frozen = freeze_data({"i": i})
        out.append(_Queued("session.open", "alice", text, frozen))
    return out


class _Signer:
    def sign(self, event_id: int, digest: str, ts: float) -> Checkpoint:
        return Checkpoint(event_id, digest, ts, "SHA256:k", "sig")


def test_batches_continue_the_stored_chain_and_verify() -> None:
    first = link_batch(None, 10.0, _queued(2), None)
    assert [e.id for e in first.events] == [1, 2] and first.events[0].prev_hash == GENESIS
    assert first.checkpoint is None and first.checkpoint_row is None
    head = (first.rows[-1][0], first.rows[-1][6])
    second = link_batch(head, 11.0, _queued(3), _Signer())
    rows = first.rows + second.rows
    assert verify_rows(rows).count == 5
    assert [to_event(r) for r in second.rows] == second.events
    last = second.events[-1]
    assert second.checkpoint_row == (5, last.hash, 11.0, "SHA256:k", "sig")


async def test_deliver_resolves_the_callers_future_from_another_thread() -> None:
    loop = asyncio.get_running_loop()
    ok: asyncio.Future[AuditEvent] = loop.create_future()
    failed: asyncio.Future[AuditEvent] = loop.create_future()
    event = link_batch(None, 1.0, _queued(1), None).events[0]
    worker = threading.Thread(target=lambda: (deliver(ok, event), deliver(failed, OSError("x"))))
    worker.start()
    worker.join()
    assert await ok is event
    with pytest.raises(OSError, match="x"):
        await failed
