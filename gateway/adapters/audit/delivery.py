"""What the SQLite and PostgreSQL audit stores share around their writer threads.

Both queue appends for one writer thread, which links a batch onto the chain
under the database's write lock (:func:`link_batch`), commits it, and tells each
waiting caller on the caller's own event loop (:func:`deliver`). Rows read back
become events with :func:`to_event`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from gateway.domain.audit.chain import GENESIS, AuditEvent, Row, event_hash
from gateway.domain.audit.checkpoint import Checkpoint


class Queued(Protocol):
    """One append waiting for the writer: the event's text as it will be hashed."""

    @property
    def kind(self) -> str: ...
    @property
    def actor(self) -> str: ...
    @property
    def data_text(self) -> str: ...
    @property
    def data(self) -> Mapping[str, object]: ...


class Signer(Protocol):
    """Signs the chain head after a batch
    (:class:`gateway.adapters.audit.anchor.CheckpointSigner`)."""

    def sign(self, event_id: int, digest: str, ts: float) -> Checkpoint: ...


@dataclass(frozen=True, slots=True)
class Linked:
    """A batch linked onto the chain: the rows to insert, the events, the head's checkpoint."""

    rows: list[Row]
    events: list[AuditEvent]
    checkpoint: Checkpoint | None

    @property
    def checkpoint_row(self) -> tuple[int, str, float, str, str] | None:
        """The ``audit_checkpoints`` row for :attr:`checkpoint`, if signed."""
        c = self.checkpoint
        return None if c is None else (c.event_id, c.hash, c.ts, c.key_id, c.signature)


def link_batch(
    head: Sequence[object] | None, ts: float, batch: Sequence[Queued], signer: Signer | None
) -> Linked:
    """Link ``batch`` after ``head`` (the last stored ``(id, hash)`` row, or None), all at ``ts``.

    Call under the write lock: ids and hashes continue the stored chain.
    """
    last_id, prev = (int(str(head[0])), str(head[1])) if head else (0, GENESIS)
    rows: list[Row] = []
    events: list[AuditEvent] = []
    for p in batch:
        last_id += 1
        digest = event_hash(prev, last_id, ts, p.kind, p.actor, p.data_text)
        rows.append((last_id, ts, p.kind, p.actor, p.data_text, prev, digest))
        events.append(AuditEvent(last_id, ts, p.kind, p.actor, p.data, prev, digest))
        prev = digest
    checkpoint = signer.sign(last_id, prev, ts) if signer is not None else None
    return Linked(rows, events, checkpoint)


def to_event(row: Row) -> AuditEvent:
    """An event from a stored ``audit_events`` row (data as stored JSON)."""
    event_id, ts, kind, actor, data_text, prev_hash, digest = row
    data = MappingProxyType(json.loads(data_text))
    return AuditEvent(event_id, ts, kind, actor, data, prev_hash, digest)


def _settle(future: asyncio.Future[AuditEvent], result: AuditEvent | BaseException) -> None:
    if future.done():  # the caller was cancelled; the event may still be committed
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def deliver(future: asyncio.Future[AuditEvent], result: AuditEvent | BaseException) -> None:
    """Resolve a caller's future from the writer thread, on the caller's loop."""
    with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody to tell
        future.get_loop().call_soon_threadsafe(_settle, future, result)
