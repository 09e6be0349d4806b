"""Reading the audit log out: paging, the newest events, JSONL and CSV, link checks.

Everything reads through ``AuditStore.list`` pages (oldest first, ``after_id``
to go on), so an export holds one page in memory whatever the log's size and
works on every backend. JSONL lines are each event's canonical JSON plus its
``prev_hash`` and ``hash``: :func:`verify_jsonl` re-checks such a file with no
database. CSV is for spreadsheets: its ``ts`` is ISO 8601 (UTC, microseconds),
which does not keep every digit of the hashed timestamp, so verify JSONL.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal, TextIO

from gateway.domain.audit.chain import (
    GENESIS,
    AuditEvent,
    Row,
    VerifyResult,
    canonical_text,
    event_hash,
    verify_rows,
)
from gateway.ports import AuditStore

PAGE: Final = 1000
CSV_COLUMNS: Final = ("id", "ts", "kind", "actor", "data", "prev_hash", "hash")
Format = Literal["jsonl", "csv"]
_ID_CEILING: Final = 1 << 62  # no chain gets near this; bounds the search for the newest id


def iso_utc(ts: float) -> str:
    """``ts`` (epoch seconds) as ISO 8601 UTC with microseconds.

    >>> iso_utc(0.5)
    '1970-01-01T00:00:00.500000Z'
    """
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_dict(e: AuditEvent) -> dict[str, object]:
    """The event as plain JSON values: its hashed body, ``prev_hash`` and ``hash``."""
    return {**e.body(), "data": dict(e.data), "prev_hash": e.prev_hash, "hash": e.hash}


def jsonl_line(e: AuditEvent) -> str:
    """One JSONL line (canonical JSON), from which the event's hash can be recomputed."""
    return canonical_text(event_dict(e)) + "\n"


def csv_row(e: AuditEvent) -> tuple[object, ...]:
    return (e.id, iso_utc(e.ts), e.kind, e.actor, canonical_text(e.data), e.prev_hash, e.hash)


async def iter_events(
    store: AuditStore,
    *,
    kind: str | None = None,
    actor: str | None = None,
    after_id: int = 0,
    limit: int | None = None,
    page: int = PAGE,
) -> AsyncIterator[AuditEvent]:
    """Matching events with id > ``after_id``, oldest first, at most ``limit``, a page at a time."""
    left = limit
    while left is None or left > 0:
        size = page if left is None else min(page, left)
        batch = await store.list(kind=kind, actor=actor, after_id=after_id, limit=size)
        for event in batch:
            yield event
        if len(batch) < size:
            return
        after_id = batch[-1].id
        if left is not None:
            left -= len(batch)


async def newest_after_id(
    store: AuditStore,
    n: int,
    *,
    kind: str | None = None,
    actor: str | None = None,
    after_id: int = 0,
) -> int:
    """The ``after_id`` from which ``list`` returns the newest ``n`` matching events.

    ``list`` only pages forwards, so this searches: doubling to pass the last id,
    then bisecting on "at least ``n`` matches after x" (true at ``after_id``,
    false past the end). About 2·log2(last id) small indexed queries.
    """
    if n <= 0 or len(await store.list(kind=kind, actor=actor, after_id=after_id, limit=n)) < n:
        return after_id
    hi = after_id + 1
    while hi < _ID_CEILING and await store.list(after_id=hi, limit=1):
        hi *= 2
    lo = after_id  # invariant: >= n matches after lo, fewer than n after hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if len(await store.list(kind=kind, actor=actor, after_id=mid, limit=n)) >= n:
            lo = mid
        else:
            hi = mid
    return lo


async def export(
    store: AuditStore,
    out: TextIO,
    fmt: Format,
    *,
    kind: str | None = None,
    actor: str | None = None,
    after_id: int = 0,
) -> int:
    """Write matching events to ``out`` as JSONL or CSV (with a header); return the count."""
    count = 0
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    async for event in iter_events(store, kind=kind, actor=actor, after_id=after_id):
        if writer is None:
            out.write(jsonl_line(event))
        else:
            writer.writerow(csv_row(event))
        count += 1
    return count


@dataclass(frozen=True, slots=True)
class Link:
    """How one event sits in the chain: its own hash, and its link to the one before."""

    hash_ok: bool  # the stored hash matches the event's contents
    prev_id: int | None  # None for event 1 (links to GENESIS)
    prev_ok: bool  # prev_hash equals the previous event's hash (GENESIS for event 1)

    @property
    def ok(self) -> bool:
        return self.hash_ok and self.prev_ok


def check_link(event: AuditEvent, previous: AuditEvent | None) -> Link:
    """Check ``event`` against its contents and ``previous`` (the event with id - 1, if any)."""
    data_text = canonical_text(event.data)
    digest = event_hash(event.prev_hash, event.id, event.ts, event.kind, event.actor, data_text)
    if event.id == 1:
        return Link(digest == event.hash, None, event.prev_hash == GENESIS)
    prev_ok = previous is not None and previous.id == event.id - 1
    prev_ok = prev_ok and previous is not None and previous.hash == event.prev_hash
    return Link(digest == event.hash, event.id - 1, prev_ok)


async def get_event(store: AuditStore, event_id: int) -> tuple[AuditEvent | None, Link | None]:
    """Event ``event_id`` and its link check; ``(None, None)`` when there is no such event."""
    page = await store.list(after_id=max(0, event_id - 2), limit=2)
    event = next((e for e in page if e.id == event_id), None)
    if event is None:
        return None, None
    previous = next((e for e in page if e.id == event_id - 1), None)
    return event, check_link(event, previous)


def verify_jsonl(lines: Iterable[str]) -> VerifyResult:
    """Verify a JSONL export on its own: the whole chain from event 1, in file order.

    A line that is not an exported event ends the walk there, reported as broken.
    """
    bad: list[int] = []

    def rows() -> Iterator[Row]:
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                e = json.loads(line)
                yield (
                    int(e["id"]),
                    float(e["ts"]),
                    str(e["kind"]),
                    str(e["actor"]),
                    canonical_text(e["data"]),
                    str(e["prev_hash"]),
                    str(e["hash"]),
                )
            except (ValueError, KeyError, TypeError):
                bad.append(n)
                return

    result = verify_rows(rows())
    if result.ok and bad:
        reason = f"line {bad[0]} is not an exported audit event"
        return VerifyResult(ok=False, count=result.count, first_broken=None, reason=reason)
    return result
