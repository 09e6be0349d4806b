"""SessionStore on a real SQLite file: start, end, get, filtered and paged listing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.adapters.storage import SessionRecord, Storage, open_storage
from gateway.domain.models import Mode
from gateway.errors import StorageError


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    s = await open_storage(f"sqlite:///{tmp_path / 'gw.db'}", clock=lambda: 1000.0)
    yield s
    await s.close()


async def _start(storage: Storage, sid: str, user: str, at: float) -> SessionRecord:
    return await storage.sessions.record_start(
        session_id=sid,
        user=user,
        host="sg-1",
        region="sg",
        mode=Mode.PASSTHROUGH,
        source="127.0.0.1:5000",
        started_at=at,
    )


async def test_start_then_end_round_trips_every_field(storage: Storage) -> None:
    started = await storage.sessions.record_start(
        session_id="s1",
        user="alice",
        host="sg-1",
        region="sg",
        mode=Mode.RECORDED,
        account="root",
        source="127.0.0.1:5000",
        gpus=2,
        started_at=10.5,
    )
    assert started.live and started.ended_at is None
    assert await storage.sessions.get("s1") == started
    ended = await storage.sessions.record_end(
        "s1",
        bytes_up=123,
        bytes_down=4_000_000_000_000,
        exit_status=3,
        error="",
        cost_usd=1.25,
        ended_at=20.0,
    )
    assert ended == SessionRecord(
        id="s1",
        user="alice",
        host="sg-1",
        region="sg",
        mode=Mode.RECORDED,
        account="root",
        source="127.0.0.1:5000",
        started_at=10.5,
        ended_at=20.0,
        bytes_up=123,
        bytes_down=4_000_000_000_000,
        exit_status=3,
        error=None,  # "" is stored as no error
        gpus=2,
        cost_usd=1.25,
    )
    assert not ended.live
    assert await storage.sessions.get("s1") == ended


async def test_clock_supplies_default_times(storage: Storage) -> None:
    rec = await storage.sessions.record_start(
        session_id="s1", user="a", host="h", region="r", mode=Mode.PASSTHROUGH
    )
    assert rec.started_at == 1000.0
    end = await storage.sessions.record_end("s1", bytes_up=0, bytes_down=0, error="lost host")
    assert end.ended_at == 1000.0 and end.error == "lost host" and end.exit_status is None


async def test_duplicate_start_is_a_storage_error(storage: Storage) -> None:
    await _start(storage, "s1", "alice", 1.0)
    with pytest.raises(StorageError, match="storage query failed"):
        await _start(storage, "s1", "bob", 2.0)
    rec = await storage.sessions.get("s1")
    assert rec is not None and rec.user == "alice"


async def test_second_end_keeps_the_first(storage: Storage) -> None:
    await _start(storage, "s1", "alice", 1.0)
    first = await storage.sessions.record_end("s1", bytes_up=1, bytes_down=2, ended_at=5.0)
    second = await storage.sessions.record_end("s1", bytes_up=9, bytes_down=9, ended_at=6.0)
    assert second == first


async def test_ending_an_unknown_session_is_an_error(storage: Storage) -> None:
    with pytest.raises(StorageError, match="no session record 'nope'"):
        await storage.sessions.record_end("nope", bytes_up=0, bytes_down=0)


async def test_get_unknown_is_none(storage: Storage) -> None:
    assert await storage.sessions.get("nope") is None


async def test_list_filters_newest_first(storage: Storage) -> None:
    await _start(storage, "a1", "alice", 1.0)
    await _start(storage, "b1", "bob", 2.0)
    await _start(storage, "a2", "alice", 3.0)
    await storage.sessions.record_end("a1", bytes_up=0, bytes_down=0, ended_at=4.0)
    ids = [r.id for r in await storage.sessions.list()]
    assert ids == ["a2", "b1", "a1"]
    assert [r.id for r in await storage.sessions.list(user="alice")] == ["a2", "a1"]
    assert [r.id for r in await storage.sessions.list(live=True)] == ["a2", "b1"]
    assert [r.id for r in await storage.sessions.list(live=False)] == ["a1"]
    assert [r.id for r in await storage.sessions.list(user="bob", live=False)] == []


async def test_paging_covers_everything_once_even_with_equal_start_times(storage: Storage) -> None:
    for i in range(23):
        await _start(storage, f"s{i:02d}", "alice", float(i // 4))  # four share each time
    seen: list[str] = []
    after: str | None = None
    for _ in range(10):
        page = await storage.sessions.list(limit=5, after=after)
        seen += [r.id for r in page]
        if len(page) < 5:
            break
        after = page[-1].id
    assert len(seen) == 23 and len(set(seen)) == 23
    starts = [float(int(s[1:]) // 4) for s in seen]
    assert starts == sorted(starts, reverse=True)


async def test_unknown_after_gives_an_empty_page(storage: Storage) -> None:
    await _start(storage, "s1", "alice", 1.0)
    assert await storage.sessions.list(after="missing") == []


async def test_negative_limit_is_refused(storage: Storage) -> None:
    with pytest.raises(ValueError):
        await storage.sessions.list(limit=-1)


async def test_concurrent_writers_all_land(storage: Storage) -> None:
    await asyncio.wait_for(
        asyncio.gather(*(_start(storage, f"s{i}", "alice", float(i)) for i in range(40))), 30
    )
    await asyncio.wait_for(
        asyncio.gather(
            *(
                storage.sessions.record_end(f"s{i}", bytes_up=i, bytes_down=i)
                for i in range(0, 40, 2)
            )
        ),
        30,
    )
    assert len(await storage.sessions.list(limit=100)) == 40
    assert len(await storage.sessions.list(live=True, limit=100)) == 20
