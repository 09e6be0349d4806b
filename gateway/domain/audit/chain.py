"""The audit hash chain: canonical encoding, linking and verification.

Pure: no I/O, no clock. Every event stores
``hash = sha256(prev_hash + canonical_json(body))`` with
``body = {"id", "ts", "kind", "actor", "data"}``; event 1 links to ``GENESIS``.
Editing, deleting, inserting or reordering any stored event changes a link that
``verify_*`` finds, and it reports the first one. Removing events from the *end*
leaves a shorter valid chain, and anyone who can write the table can re-hash
or extend it: ``gateway.domain.audit.checkpoint`` closes those gaps with signed
checkpoints and a head kept outside the database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from types import MappingProxyType
from typing import Final

from gateway.errors import ChainBroken

GENESIS: Final = "0" * 64

# (id, ts, kind, actor, data as canonical JSON text, prev_hash, hash): one stored row.
Row = tuple[int, float, str, str, str, str, str]


def _default(obj: object) -> object:
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"audit data value of type {type(obj).__name__} is not JSON")


_ENCODER: Final = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_default,
)


def canonical_text(obj: object) -> str:
    """``canonical_json`` as text: the form stored in the ``data`` column."""
    return _ENCODER.encode(obj)


def canonical_json(obj: object) -> bytes:
    """One byte string per value (sorted keys, no spaces, UTF-8), so hashes are reproducible.

    NaN and infinities raise ``ValueError``: they have no JSON form to agree on.
    """
    return _ENCODER.encode(obj).encode("utf-8")


def freeze_data(data: Mapping[str, object]) -> tuple[str, Mapping[str, object]]:
    """Return ``(canonical text, read-only copy)`` of an event's data, or raise ``ValueError``.

    The copy is parsed back from the text, so what a store hands back equals what
    it later reads. Data whose canonical form would change on that round trip
    (non-string keys that sort differently as text) is refused: its hash could not
    be re-checked from what is read back.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"audit data must be a mapping, not {type(data).__name__}")
    text = canonical_text(data)
    text.encode("utf-8")  # lone surrogates have no UTF-8 form
    parsed = json.loads(text)
    if canonical_text(parsed) != text:
        raise ValueError("audit data keys must be strings (at every level)")
    return text, MappingProxyType(parsed)


def _body_text(event_id: int, ts: float, kind: str, actor: str, data_text: str) -> str:
    # Equal to canonical_text(body) for canonical data_text (keys in sorted order),
    # built directly so that verifying stored rows never re-parses their data.
    return (
        f'{{"actor":{encode_basestring(actor)},"data":{data_text},"id":{event_id},'
        f'"kind":{encode_basestring(kind)},"ts":{ts!r}}}'
    )


def event_hash(
    prev_hash: str, event_id: int, ts: float, kind: str, actor: str, data_text: str
) -> str:
    """The hash of a new event, from its parts and its data's canonical text."""
    text = prev_hash + _body_text(event_id, ts, kind, actor, data_text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def link_hash(prev_hash: str, body: Mapping[str, object]) -> str:
    """``sha256(prev_hash + canonical_json(body))``: the chain's definition, in one line."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(body)).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One committed audit event; ``hash`` seals ``body()`` to ``prev_hash``."""

    id: int
    ts: float
    kind: str
    actor: str
    data: Mapping[str, object] = field(hash=False)
    prev_hash: str
    hash: str

    def body(self) -> dict[str, object]:
        """The hashed part of the event."""
        return {
            "id": self.id,
            "ts": self.ts,
            "kind": self.kind,
            "actor": self.actor,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of walking a chain: ``count`` events were valid before ``first_broken``.

    ``head_id``/``head_hash`` name the last valid event (0 and ``GENESIS`` for none);
    ``signed_through`` is the event the newest trusted checkpoint covers, when
    checkpoints were checked. They do not take part in equality.
    """

    ok: bool
    count: int
    first_broken: int | None
    reason: str
    head_id: int = field(default=0, compare=False)
    head_hash: str = field(default=GENESIS, compare=False)
    signed_through: int | None = field(default=None, compare=False)

    def raise_if_broken(self) -> None:
        """Raise ``ChainBroken`` (carrying the event id) when the chain did not verify."""
        if not self.ok:
            raise ChainBroken(self.reason, self.first_broken)


def _broken(count: int, event_id: int, reason: str, head: str = GENESIS) -> VerifyResult:
    return VerifyResult(
        ok=False,
        count=count,
        first_broken=event_id,
        reason=reason,
        head_id=count,
        head_hash=head,
    )


def _gap_reason(expected: int, found: int) -> str:
    if expected == 1:
        return f"chain starts at event {found}, not 1 (leading events deleted)"
    if found < expected:
        return f"event {found} follows event {expected - 1} (events reordered or duplicated)"
    missing = str(expected) if found == expected + 1 else f"{expected}..{found - 1}"
    return f"gap in ids: event {missing} missing before event {found} (deleted)"


def verify_rows(rows: Iterable[Row]) -> VerifyResult:
    """Walk stored rows in id order and report the first broken link.

    ``data`` in each row must be the text as stored: re-encoding parsed data would
    hide an edit that only changed formatting. This is the fast path used on
    databases; keep per-row work to one f-string, one encode and one sha256.
    """
    sha256 = hashlib.sha256
    enc = encode_basestring
    expected = 1
    prev = GENESIS
    count = 0
    for event_id, ts, kind, actor, data_text, prev_hash, stored_hash in rows:
        if event_id != expected:
            return _broken(count, event_id, _gap_reason(expected, event_id), prev)
        if prev_hash != prev:
            if expected == 1:
                return _broken(count, event_id, "event 1 does not link to GENESIS", prev)
            return _broken(
                count,
                event_id,
                f"event {event_id} prev_hash does not match the hash of event "
                f"{event_id - 1} (event {event_id - 1} replaced or re-hashed)",
                prev,
            )
        try:
            text = (
                f'{prev}{{"actor":{enc(actor)},"data":{data_text},"id":{event_id},'
                f'"kind":{enc(kind)},"ts":{ts!r}}}'
            )
            digest = sha256(text.encode("utf-8")).hexdigest()
        except (TypeError, ValueError):
            return _broken(count, event_id, f"event {event_id} is malformed (edited)", prev)
        if digest != stored_hash:
            return _broken(
                count, event_id, f"event {event_id} hash does not match its contents (edited)", prev
            )
        prev = stored_hash
        expected += 1
        count += 1
    return VerifyResult(
        ok=True, count=count, first_broken=None, reason="ok", head_id=count, head_hash=prev
    )


def verify_events(events: Iterable[AuditEvent]) -> VerifyResult:
    """Walk events in ascending id order and report the first broken link.

    Checks, per event: its id follows the previous one (else a deletion or
    reordering), its ``prev_hash`` is the previous hash (``GENESIS`` for event 1),
    and its ``hash`` matches its body (else it was edited).
    """
    return verify_rows(
        (e.id, e.ts, e.kind, e.actor, canonical_text(e.data), e.prev_hash, e.hash) for e in events
    )
