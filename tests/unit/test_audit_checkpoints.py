"""Signed checkpoints, the anchor file and crash reconciliation, on real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.adapters.audit.anchor import (
    ANCHOR_MAX_BYTES,
    CheckpointSigner,
    TrustedKeys,
    anchors_for,
    read_anchor,
    write_anchor,
)
from gateway.adapters.audit.sqlite import SQLiteAuditStore, verify_file
from gateway.adapters.audit.store import open_store
from gateway.adapters.storage import open_storage
from gateway.adapters.storage.sessions import SessionStore
from gateway.domain.audit.chain import event_hash
from gateway.domain.audit.checkpoint import Anchors, Checkpoint, parse_head
from gateway.domain.metering.meter import Rate
from gateway.domain.models import Mode
from gateway.errors import KeyMaterialError, StorageError
from gateway.services.reconcile import CRASH_ERROR, close_orphans, of_node


def _write(path: Path, signer: CheckpointSigner | None, n: int) -> None:
    async def main() -> None:
        store = SQLiteAuditStore(path, signer=signer)
        try:
            await asyncio.gather(*(store.append("k", "a", {"i": i}) for i in range(n)))
        finally:
            await store.close()

    asyncio.run(main())


@pytest.fixture
def signer(tmp_path: Path) -> CheckpointSigner:
    return CheckpointSigner.from_path(tmp_path / "keys" / "cp", tmp_path / "keys" / "anchor.json")


@pytest.fixture
def db(tmp_path: Path, signer: CheckpointSigner) -> Path:
    path = tmp_path / "a.db"
    _write(path, signer, 20)
    return path


def _check(path: Path, signer: CheckpointSigner, **kw: object) -> tuple[bool, str]:
    anchors = anchors_for(signer.trusted(), signer.anchor_file, **kw)  # type: ignore[arg-type]
    result = verify_file(str(path), anchors=anchors)
    return result.ok, result.reason


def _sql(path: Path, *statements: str) -> None:
    con = sqlite3.connect(path)
    con.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
    con.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
    for s in statements:
        con.execute(s)
    con.commit()
    con.close()


def test_every_commit_is_signed_and_the_anchor_follows(db: Path, signer: CheckpointSigner) -> None:
    result = verify_file(str(db), anchors=anchors_for(signer.trusted(), signer.anchor_file))
    assert result.ok and result.count == 20 and result.signed_through == 20
    anchor = read_anchor(signer.anchor_file)  # type: ignore[arg-type]
    assert anchor is not None and (anchor.event_id, anchor.hash) == (20, result.head_hash)


@pytest.mark.parametrize(
    ("statements", "phrase"),
    [
        (["DELETE FROM audit_events WHERE id > 15", "DELETE FROM audit_checkpoints"], "truncated"),
        (["DELETE FROM audit_events WHERE id > 15"], "events deleted from the end"),
        (["DELETE FROM audit_events", "DELETE FROM audit_checkpoints"], "chain ends at event 0"),
        (["UPDATE audit_checkpoints SET signature = 'AAAA'"], "not signed by a trusted"),
        (["UPDATE audit_checkpoints SET key_id = 'SHA256:other'"], "not signed by a trusted"),
    ],
)
def test_tampering_is_detected(
    db: Path, signer: CheckpointSigner, statements: list[str], phrase: str
) -> None:
    _sql(db, *statements)
    ok, reason = _check(db, signer)
    assert not ok and phrase in reason, reason


def test_a_rehashed_chain_disagrees_with_its_checkpoints(
    db: Path, signer: CheckpointSigner
) -> None:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, ts, kind, actor, data FROM audit_events ORDER BY id").fetchall()
    con.close()
    prev = event_hash("0" * 64, *rows[0])  # event 1 untouched
    statements = []
    for event_id, ts, kind, _actor, data in rows[1:]:
        digest = event_hash(prev, event_id, ts, kind, "mallory", data)
        statements.append(
            f"UPDATE audit_events SET actor='mallory', prev_hash='{prev}', hash='{digest}'"
            f" WHERE id={event_id}"
        )
        prev = digest
    _sql(db, *statements)
    assert verify_file(str(db)).ok  # the links alone hold
    ok, reason = _check(db, signer)
    assert not ok and "rewritten" in reason


def test_events_from_a_writer_without_the_key_are_forged(
    db: Path, signer: CheckpointSigner
) -> None:
    _write(db, None, 2)
    ok, reason = _check(db, signer)
    assert not ok and reason.startswith("event 21..22 not covered by a signed checkpoint")


def test_expect_head(db: Path, signer: CheckpointSigner) -> None:
    head = verify_file(str(db)).head_hash
    assert _check(db, signer, expect=(20, head))[0]
    assert _check(db, signer, expect=(5, head)) == (
        False,
        "event 5 does not have the expected hash",
    )
    assert "expected head is event 21" in _check(db, signer, expect=(21, head))[1]


@pytest.mark.parametrize("text", ["", "12", "12:", "x:" + "a" * 64, "1:" + "A" * 64, "1:abc"])
def test_parse_head_refuses_bad_input(text: str) -> None:
    with pytest.raises(ValueError, match="expected ID:HASH"):
        parse_head(text)


def test_the_anchor_only_moves_forward(tmp_path: Path, signer: CheckpointSigner) -> None:
    path = tmp_path / "anchor.json"
    new, old = signer.sign(9, "b" * 64, 2.0), signer.sign(3, "a" * 64, 1.0)
    assert write_anchor(path, new)
    assert not write_anchor(path, old)
    assert read_anchor(path) == new


@pytest.mark.parametrize(
    "content",
    [b"", b"{}", b"not json", b'{"event_id": "1"}', b"x" * (ANCHOR_MAX_BYTES + 1)],
)
def test_an_unreadable_anchor_is_an_error_not_no_anchor(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "anchor.json"
    path.write_bytes(content)
    with pytest.raises(StorageError, match="not an audit anchor file"):
        read_anchor(path)


def test_a_signature_from_another_key_is_refused(tmp_path: Path, signer: CheckpointSigner) -> None:
    other = CheckpointSigner.from_path(tmp_path / "other")
    forged = other.sign(1, "a" * 64, 1.0)
    relabelled = Checkpoint(1, "a" * 64, 1.0, signer.key_id, forged.signature)
    trusted = signer.trusted()
    assert trusted(signer.sign(1, "a" * 64, 1.0))
    assert not trusted(forged)
    assert not trusted(relabelled)
    assert not trusted(Checkpoint(1, "a" * 64, 1.0, signer.key_id, "!!not base64!!"))


def test_trusted_keys_from_the_public_file(tmp_path: Path, signer: CheckpointSigner) -> None:
    public = TrustedKeys.from_file(tmp_path / "keys" / "cp.pub")
    assert public(signer.sign(4, "c" * 64, 3.0))
    with pytest.raises(KeyMaterialError, match="no such audit checkpoint key"):
        TrustedKeys.from_file(tmp_path / "missing")
    (tmp_path / "junk").write_text("junk")
    with pytest.raises(KeyMaterialError, match="not an OpenSSH public key"):
        TrustedKeys.from_file(tmp_path / "junk")


def test_a_missing_anchor_fails_closed_when_required(tmp_path: Path) -> None:
    signer = CheckpointSigner.from_path(tmp_path / "k")
    with pytest.raises(StorageError, match="audit anchor file missing"):
        anchors_for(signer.trusted(), tmp_path / "none.json", require_anchor=True)
    assert isinstance(anchors_for(signer.trusted(), tmp_path / "none.json"), Anchors)


def test_store_verify_uses_its_key(tmp_path: Path, signer: CheckpointSigner) -> None:
    async def main() -> tuple[bool, bool]:
        store = open_store(str(tmp_path / "s.db"), signer)
        try:
            await store.append("k", "a", {})
            before = (await store.verify()).ok
            _sql(tmp_path / "s.db", "DELETE FROM audit_checkpoints")
            return before, (await store.verify()).ok
        finally:
            await store.close()

    assert asyncio.run(main()) == (True, False)


# -- crash reconciliation ------------------------------------------------------------


def test_close_orphans_closes_costs_and_audits_what_it_owns() -> None:
    async def main() -> None:
        storage = await open_storage("memory://")
        audit = open_store("memory://")
        s = storage.sessions
        for i, gpus in enumerate((2, 0, 1)):
            await s.record_start(
                session_id=f"s{i}",
                user="alice",
                host="sg-1" if i < 2 else "gone-1",
                region="sg",
                mode=Mode.RECORDED,
                gpus=gpus,
                started_at=1000.0 + i,
            )
        await s.record_start(
            session_id="other", user="bob", host="sg-1", region="sg", mode=Mode.RECORDED
        )
        closed = await close_orphans(
            s,
            audit,
            rate_of={"sg-1": Rate(3.0)}.get,
            last_seen=lambda r: r.started_at + 1800,
            owned=lambda r: r.user == "alice",
        )
        assert sorted(r.id for r in closed) == ["s0", "s1", "s2"]
        by_id = {r.id: r for r in closed}
        assert by_id["s0"].cost_usd == pytest.approx(3.0)  # 2 GPUs x 3.0/h x 0.5 h
        assert by_id["s1"].cost_usd == 0.0
        assert by_id["s2"].cost_usd is None  # the host is gone: its rate is unknown
        assert all(r.error == CRASH_ERROR and r.ended_at is not None for r in closed)
        assert (await s.get("other")).live  # type: ignore[union-attr]
        ends = await audit.list(kind="session.end")
        assert sorted(str(e.data["session_id"]) for e in ends) == ["s0", "s1", "s2"]
        assert all(e.data["reconciled"] is True for e in ends)
        again = await close_orphans(
            s, audit, rate_of=lambda h: None, last_seen=lambda r: 0.0, owned=lambda r: False
        )
        assert again == []
        await audit.close()
        await storage.close()

    asyncio.run(main())


def test_close_orphans_is_bounded() -> None:
    async def main() -> int:
        storage = await open_storage("memory://")
        audit = open_store("memory://")
        for i in range(7):
            await storage.sessions.record_start(
                session_id=f"s{i}", user="a", host="h", region="r", mode=Mode.PASSTHROUGH
            )
        closed = await close_orphans(
            storage.sessions, audit, rate_of=lambda h: None, last_seen=lambda r: 0.0, limit=5
        )
        left = await storage.sessions.list(live=True)
        await audit.close()
        await storage.close()
        assert len(left) == 2
        return len(closed)

    assert asyncio.run(main()) == 5


def test_an_end_that_cannot_be_audited_leaves_the_record_open() -> None:
    async def main() -> bool:
        storage = await open_storage("memory://")
        audit = open_store("memory://")
        await storage.sessions.record_start(
            session_id="s", user="a", host="h", region="r", mode=Mode.PASSTHROUGH
        )
        await audit.close()  # appends now fail
        with pytest.raises(StorageError):
            await close_orphans(
                storage.sessions, audit, rate_of=lambda h: None, last_seen=lambda r: 0.0
            )
        record = await storage.sessions.get("s")
        await storage.close()
        return record is not None and record.live

    assert asyncio.run(main())


def test_a_node_closes_only_its_own_records() -> None:
    async def main() -> list[str]:
        storage = await open_storage("memory://", node="a")
        audit = open_store("memory://")
        other = SessionStore(storage.db, node="b")
        legacy = SessionStore(storage.db)  # before nodes were recorded
        for store, sid in ((storage.sessions, "mine"), (other, "theirs"), (legacy, "old")):
            await store.record_start(
                session_id=sid, user="u", host="h", region="r", mode=Mode.PASSTHROUGH
            )
        assert (await storage.sessions.get("mine")).node == "a"  # type: ignore[union-attr]
        closed = await close_orphans(
            storage.sessions,
            audit,
            rate_of=lambda h: None,
            last_seen=lambda r: r.started_at,
            owned=of_node("a"),
        )
        theirs = await storage.sessions.get("theirs")
        assert theirs is not None and theirs.live
        await audit.close()
        await storage.close()
        return sorted(r.id for r in closed)

    assert asyncio.run(main()) == ["mine", "old"]
