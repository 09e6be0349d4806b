"""Signed checkpoints: what makes the audit chain's *end* tamper-evident.

Pure: no I/O, no clock, no key handling (a signature check is passed in).

The hash chain alone proves that the events present link up; anyone who can
write the table can still cut its tail, empty it, re-hash everything after an
edit, or append a well-linked forgery. Checkpoints close that:

- every commit that extends the chain also stores, in the same transaction, a
  **checkpoint** of its new head, ``(event id, hash, ts)`` signed with an
  ed25519 key kept outside the database (the gateway's key directory). An
  event past the newest checkpoint was therefore written without the key
  (forged append); a checkpoint that disagrees with the event it names means
  the event was rewritten and the rest re-hashed; one past the chain's end
  means events were deleted.
- the newest checkpoint is also kept outside the database (an **anchor**: a
  file beside the key, a log line, an operator's ``--expect-head ID:HASH``):
  truncating the table and its checkpoints together, or emptying both, leaves
  the chain shorter than its anchor.

Only the newest checkpoint's signature needs checking: it seals its event's
hash, which seals every event before it. The others are checked against the
chain (one string compare each), so verification stays one pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Final

from gateway.domain.audit.chain import Row, VerifyResult, canonical_json, verify_rows

CONTEXT: Final = b"gpuhop-audit-checkpoint-v1\n"
_HEAD = re.compile(r"([0-9]{1,19}):([0-9a-f]{64})")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement "the chain's event ``event_id`` has hash ``hash``"."""

    event_id: int
    hash: str
    ts: float
    key_id: str  # the signing key's SHA256 fingerprint
    signature: str  # base64 of the SSH signature blob

    def message(self) -> bytes:
        """The bytes the signature covers."""
        return checkpoint_message(self.event_id, self.hash, self.ts)


def checkpoint_message(event_id: int, digest: str, ts: float) -> bytes:
    """Domain-separated canonical bytes of a checkpoint's claim.

    >>> checkpoint_message(7, "ab", 1.5)
    b'gpuhop-audit-checkpoint-v1\\n{"hash":"ab","id":7,"ts":1.5}'
    """
    return CONTEXT + canonical_json({"id": event_id, "hash": digest, "ts": ts})


def parse_head(text: str) -> tuple[int, str]:
    """``ID:HASH`` (as ``audit verify --json`` prints it) -> ``(id, hash)``, or ``ValueError``.

    >>> parse_head("12:" + "a" * 64)[0]
    12
    """
    match = _HEAD.fullmatch(text.strip())
    if match is None:
        raise ValueError("expected ID:HASH (a decimal event id, a colon, 64 lowercase hex digits)")
    return int(match.group(1)), match.group(2)


@dataclass(frozen=True, slots=True)
class Anchors:
    """What a chain is checked against beyond its own links.

    ``trusted`` says whether a checkpoint's signature is by a trusted key.
    ``anchor`` is the checkpoint kept outside the database (None: none kept);
    ``anchor_name`` says where it came from, for messages. ``expect`` is an
    ``(id, hash)`` the operator holds.
    """

    trusted: Callable[[Checkpoint], bool]
    anchor: Checkpoint | None = None
    anchor_name: str = "anchor"
    expect: tuple[int, str] | None = None


@dataclass(slots=True)
class _Tap:
    """Watches rows go by: matches checkpoints and remembers the ids asked about."""

    checkpoints: Iterator[Checkpoint]
    wanted: frozenset[int]
    seen: dict[int, str]
    pending: Checkpoint | None = None
    last: Checkpoint | None = None
    mismatch: tuple[Checkpoint, str | None] | None = None

    def __post_init__(self) -> None:
        self.pending = next(self.checkpoints, None)

    def rows(self, rows: Iterable[Row]) -> Iterator[Row]:
        for row in rows:
            event_id, digest = row[0], row[6]
            while self.pending is not None and self.pending.event_id < event_id:
                # A checkpoint for an id the chain skips: the chain walk reports the gap.
                if self.mismatch is None:
                    self.mismatch = (self.pending, None)
                self.pending = next(self.checkpoints, None)
            if self.pending is not None and self.pending.event_id == event_id:
                if self.pending.hash != digest and self.mismatch is None:
                    self.mismatch = (self.pending, digest)
                self.last = self.pending
                self.pending = next(self.checkpoints, None)
            if event_id in self.wanted:
                self.seen[event_id] = digest
            yield row


def _fail(result: VerifyResult, event_id: int, reason: str) -> VerifyResult:
    return replace(result, ok=False, first_broken=event_id, reason=reason)


def verify_anchored(
    rows: Iterable[Row], checkpoints: Iterable[Checkpoint], anchors: Anchors
) -> VerifyResult:
    """Walk the chain (``verify_rows``) and check it against its checkpoints and anchors.

    ``checkpoints`` must come in ascending ``event_id`` order, from the same read
    snapshot as ``rows``. Reports, in this order: a broken link; a checkpoint
    that disagrees with its event (rewritten); one past the chain's end
    (deleted); the anchor and the expected head (truncated or rewritten);
    events past the newest checkpoint (forged append); a newest checkpoint not
    signed by a trusted key (forged).
    """
    ids = [anchors.anchor.event_id] if anchors.anchor is not None else []
    if anchors.expect is not None:
        ids.append(anchors.expect[0])
    wanted = frozenset(ids)
    tap = _Tap(iter(checkpoints), wanted, {})
    result = verify_rows(tap.rows(rows))
    if not result.ok:
        return result
    head = result.head_id
    if tap.mismatch is not None:
        cp, found = tap.mismatch
        if found is None:
            return _fail(
                result, cp.event_id, f"a checkpoint names event {cp.event_id}, which is missing"
            )
        if anchors.trusted(cp):
            return _fail(
                result,
                cp.event_id,
                f"event {cp.event_id} differs from its signed checkpoint "
                "(rewritten and the chain re-hashed)",
            )
        return _fail(
            result,
            cp.event_id,
            f"checkpoint for event {cp.event_id} is not validly signed (forged)",
        )
    if tap.pending is not None:
        cp = tap.pending
        signed = "signed" if anchors.trusted(cp) else "unsigned (forged)"
        return _fail(
            result,
            head + 1,
            f"chain ends at event {head} but a {signed} checkpoint names event "
            f"{cp.event_id} (events deleted from the end)",
        )
    anchor = anchors.anchor
    if anchor is not None:
        where = anchors.anchor_name
        if not anchors.trusted(anchor):
            return _fail(
                result, anchor.event_id, f"{where}: checkpoint is not signed by a trusted audit key"
            )
        if anchor.event_id > head:
            return _fail(
                result,
                head + 1,
                f"chain ends at event {head} but {where} records event {anchor.event_id} "
                "(events deleted or the log truncated)",
            )
        if tap.seen.get(anchor.event_id) != anchor.hash:
            return _fail(
                result,
                anchor.event_id,
                f"event {anchor.event_id} differs from {where} (rewritten and re-hashed)",
            )
    if anchors.expect is not None:
        want_id, want_hash = anchors.expect
        if want_id > head:
            return _fail(
                result,
                head + 1,
                f"chain ends at event {head} but the expected head is event {want_id} "
                "(events deleted or the log truncated)",
            )
        if tap.seen.get(want_id) != want_hash:
            return _fail(result, want_id, f"event {want_id} does not have the expected hash")
    last = tap.last
    if head and (last is None or last.event_id < head):
        first = 1 if last is None else last.event_id + 1
        span = str(head) if first == head else f"{first}..{head}"
        return _fail(
            result,
            first,
            f"event {span} not covered by a signed checkpoint "
            "(appended without the audit key: forged)",
        )
    if last is not None:
        if not anchors.trusted(last):
            return _fail(
                result,
                last.event_id,
                f"checkpoint for event {last.event_id} is not signed by a trusted audit key "
                "(forged)",
            )
        result = replace(result, signed_through=last.event_id)
    return result
