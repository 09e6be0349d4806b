"""Session start/end: one value gives the audit event and the session record."""

from __future__ import annotations

from gateway.adapters.audit.memory import MemoryAuditStore
from gateway.adapters.storage import open_storage
from gateway.domain.models import Mode
from gateway.domain.sessionevents import SessionEnd, SessionStart
from tests.fakeruntime import front_context, runtime_of

START = SessionStart(
    "s1",
    "alice",
    "sg-1",
    "sg",
    Mode.RECORDED,
    source="127.0.0.1",
    account="root",
    gpus=2,
    details={"role": "dev", "user": "mallory"},
)


def test_start_audit_data_holds_the_record_fields_and_details() -> None:
    assert START.audit_data() == {
        "session_id": "s1",
        "user": "alice",  # a detail never overrides a record field
        "source": "127.0.0.1",
        "host": "sg-1",
        "region": "sg",
        "mode": "recorded",
        "account": "root",
        "gpus": 2,
        "role": "dev",
    }


def test_end_carries_the_start_and_only_known_optionals() -> None:
    end = SessionEnd(START, bytes_up=3, bytes_down=4, duration_s=1.23456789, exit_status=0)
    data = end.audit_data()
    assert data["session_id"] == "s1" and data["role"] == "dev"
    assert (data["bytes_up"], data["bytes_down"], data["duration_s"]) == (3, 4, 1.234568)
    assert "cost_usd" not in data and "ended_at" not in data
    later = SessionEnd(START, cost_usd=0.5, ended_at=100.0, details={"reconciled": True})
    assert later.audit_data()["cost_usd"] == 0.5
    assert later.audit_data()["ended_at"] == 100.0
    assert later.audit_data()["reconciled"] is True


async def test_context_writes_audit_and_record_from_one_value() -> None:
    storage = await open_storage("memory://")
    audit = MemoryAuditStore()
    ctx = front_context(runtime_of(), audit, storage.sessions)
    try:
        await ctx.start_session(START)
        ctx.end_session(SessionEnd(START, bytes_up=7, bytes_down=9, error="", cost_usd=1.5))
        await ctx.flush()
        started, ended = audit.events
        assert (started.kind, started.actor, started.data) == (
            "session.start",
            "alice",
            START.audit_data(),
        )
        assert (ended.kind, ended.data["bytes_down"], ended.data["error"]) == ("session.end", 9, "")
        record = await storage.sessions.get("s1")
        assert record is not None
        assert (record.user, record.host, record.region, record.mode) == (
            "alice",
            "sg-1",
            "sg",
            Mode.RECORDED,
        )
        assert (record.account, record.source, record.gpus) == ("root", "127.0.0.1", 2)
        assert (record.bytes_up, record.bytes_down, record.cost_usd) == (7, 9, 1.5)
        assert record.error is None and not record.live
    finally:
        await storage.close()
