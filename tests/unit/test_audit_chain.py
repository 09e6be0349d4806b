"""The audit chain maths (pure) and the in-memory store that shares it."""

from __future__ import annotations

import dataclasses
import doctest
import hashlib
import itertools
import json
import math
import time
from collections.abc import Mapping
from types import MappingProxyType

import pytest

import gateway.ports
from gateway.adapters.audit.memory import MemoryAuditStore
from gateway.domain.audit.chain import (
    GENESIS,
    AuditEvent,
    VerifyResult,
    canonical_json,
    canonical_text,
    event_hash,
    freeze_data,
    link_hash,
    verify_events,
    verify_rows,
)
from gateway.errors import ChainBroken, StorageError


def make_chain(n: int) -> list[AuditEvent]:
    """n events built by hand from the definition (link_hash on body()), not the stores."""
    events: list[AuditEvent] = []
    prev = GENESIS
    for i in range(1, n + 1):
        _, data = freeze_data({"host": f"sg-{i % 3}", "n": i, "note": 'é ✓ "q"\n'})
        body = {"id": i, "ts": 1_700_000_000.0 + i / 7, "kind": "k", "actor": f"u{i % 2}"}
        digest = link_hash(prev, {**body, "data": data})
        events.append(AuditEvent(i, body["ts"], "k", f"u{i % 2}", data, prev, digest))  # type: ignore[arg-type]
        prev = digest
    return events


# -- canonical encoding ------------------------------------------------------


def test_canonical_json_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": [1.5, None, True], "é": "✓"}) == (
        '{"a":[1.5,null,true],"b":1,"é":"✓"}'.encode()
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_canonical_json_rejects_non_finite(bad: float) -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": bad})


def test_canonical_json_accepts_nested_mappings() -> None:
    assert canonical_json({"a": MappingProxyType({"z": 1, "y": 2})}) == b'{"a":{"y":2,"z":1}}'


@pytest.mark.parametrize(
    "data",
    [
        {2: "int keys sort", 10: "differently from their text"},
        {"a": {2: "nested", 10: "int keys"}},
        {"s": {1, 2}},
        {"lone": "\ud800"},
        {"nan": math.nan},
    ],
)
def test_freeze_data_refuses_what_cannot_round_trip(data: Mapping[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        freeze_data(data)


def test_freeze_data_is_read_only_and_parsed() -> None:
    text, frozen = freeze_data({"t": (1, 2), "m": {"b": 1, "a": 2}})
    assert text == '{"m":{"a":2,"b":1},"t":[1,2]}'
    assert frozen == {"t": [1, 2], "m": {"a": 2, "b": 1}}
    with pytest.raises(TypeError):
        frozen["x"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("ts", "kind", "actor", "data"),
    [
        (0.0, "", "", {}),
        (1_700_000_000.123456, "session.open", "alice", {"host": "sg-1"}),
        (1e-7, 'quote"back\\slash', "tab\tnl\n", {"ctl": "\x00\x1f\x7f"}),
        (1e22, "ünïcödé", "名前", {"emoji": "🚀", "z": [1, {"b": None, "a": -0.0}]}),
        (12345, "int-ts", "u", {"big": 10**30, "f": 0.1 + 0.2}),
    ],
)
def test_fast_hash_equals_definition(
    ts: float, kind: str, actor: str, data: Mapping[str, object]
) -> None:
    text, frozen = freeze_data(data)
    body = {"id": 42, "ts": ts, "kind": kind, "actor": actor, "data": frozen}
    expected = hashlib.sha256(GENESIS.encode("ascii") + canonical_json(body)).hexdigest()
    assert link_hash(GENESIS, body) == expected
    assert event_hash(GENESIS, 42, ts, kind, actor, text) == expected


def test_event_body_and_link() -> None:
    events = make_chain(3)
    assert set(events[0].body()) == {"id", "ts", "kind", "actor", "data"}
    assert events[0].prev_hash == GENESIS
    for prev, event in itertools.pairwise(events):
        assert event.prev_hash == prev.hash
        assert link_hash(event.prev_hash, event.body()) == event.hash
    assert hash(events[0]) == hash(dataclasses.replace(events[0]))


# -- verification --------------------------------------------------------------


def test_round_trip_verifies() -> None:
    events = make_chain(50)
    assert verify_events(events) == VerifyResult(True, 50, None, "ok")
    assert verify_events([]) == VerifyResult(True, 0, None, "ok")
    rows = [
        (e.id, e.ts, e.kind, e.actor, canonical_text(e.data), e.prev_hash, e.hash) for e in events
    ]
    assert verify_rows(rows).ok


def _replace(events: list[AuditEvent], index: int, **changes: object) -> list[AuditEvent]:
    out = list(events)
    out[index] = dataclasses.replace(out[index], **changes)  # type: ignore[arg-type]
    return out


def _rehash(event: AuditEvent, **changes: object) -> AuditEvent:
    changed = dataclasses.replace(event, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(changed, hash=link_hash(changed.prev_hash, changed.body()))


E = make_chain(10)


@pytest.mark.parametrize(
    ("events", "first_broken", "count", "words"),
    [
        (_replace(E, 4, data={"host": "evil"}), 5, 4, "hash does not match its contents"),
        (_replace(E, 4, actor="mallory"), 5, 4, "edited"),
        (_replace(E, 4, ts=E[4].ts + 1), 5, 4, "edited"),
        (_replace(E, 4, kind="other"), 5, 4, "edited"),
        (_replace(E, 6, hash=E[2].hash), 7, 6, "hash does not match"),
        (E[:5] + E[6:], 7, 5, "event 6 missing before event 7"),
        (E[:3] + E[6:], 7, 3, "event 4..6 missing before event 7"),
        (E[1:], 2, 0, "chain starts at event 2"),
        ([*E[:5], E[6], E[5], *E[7:]], 7, 5, "missing"),
        ([*E[:5], E[4], *E[5:]], 5, 5, "event 5 follows event 5"),
        (_replace(E, 0, prev_hash="f" * 64), 1, 0, "GENESIS"),
        ([_rehash(E[0], prev_hash="f" * 64), *E[1:]], 1, 0, "GENESIS"),
        ([*E[:3], _rehash(E[3], data={"x": 1}), *E[4:]], 5, 4, "event 4 replaced or re-hashed"),
        (_replace(E, 2, actor=None), 3, 2, "malformed"),
    ],
    ids=[
        "edited-data",
        "edited-actor",
        "edited-ts",
        "edited-kind",
        "swapped-hash",
        "deleted-middle",
        "deleted-run",
        "deleted-first",
        "swapped-rows",
        "duplicated-row",
        "bad-genesis",
        "rehashed-genesis",
        "rehashed-middle",
        "wrong-type",
    ],
)
def test_verify_reports_first_broken_link(
    events: list[AuditEvent], first_broken: int, count: int, words: str
) -> None:
    result = verify_events(events)
    assert not result.ok
    assert result.first_broken == first_broken
    assert result.count == count
    assert words in result.reason
    assert "\n" not in result.reason
    with pytest.raises(ChainBroken) as info:
        result.raise_if_broken()
    assert info.value.event_id == first_broken


def test_edit_formatting_only_is_caught_on_rows() -> None:
    """Stored text is hashed as stored: re-spacing the JSON is an edit too."""
    e = make_chain(2)
    rows = [(x.id, x.ts, x.kind, x.actor, canonical_text(x.data), x.prev_hash, x.hash) for x in e]
    rows[1] = (*rows[1][:4], json.dumps(dict(e[1].data)), *rows[1][5:])
    result = verify_rows(rows)
    assert (result.ok, result.first_broken) == (False, 2)


def test_verify_is_fast() -> None:
    """A loose floor (the target is 100k events/s; bench/audit_verify.py measures it)."""
    events = make_chain(20_000)
    started = time.perf_counter()
    assert verify_events(events).ok
    assert 20_000 / (time.perf_counter() - started) > 20_000


# -- the in-memory store ---------------------------------------------------------


async def test_memory_store_appends_lists_and_verifies() -> None:
    store = MemoryAuditStore()
    for i in range(6):
        await store.append("open" if i % 2 else "deny", f"u{i % 3}", {"i": i})
    assert [e.id for e in await store.list()] == [1, 2, 3, 4, 5, 6]
    assert [e.id for e in await store.list(kind="open")] == [2, 4, 6]
    assert [e.id for e in await store.list(actor="u0", kind="deny")] == [1]
    assert [e.id for e in await store.list(after_id=2, limit=2)] == [3, 4]
    assert await store.list(limit=0) == []
    assert (await store.verify()).ok
    store.events[2] = dataclasses.replace(store.events[2], data={"i": 99})
    assert (await store.verify()).first_broken == 3
    await store.close()
    with pytest.raises(StorageError):
        await store.append("k", "a", {})


def test_store_protocol_examples_run() -> None:
    failures, tried = doctest.testmod(gateway.ports, raise_on_error=False)
    assert tried >= 4
    assert failures == 0
