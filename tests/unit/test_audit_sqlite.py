"""The SQLite audit store against real files, real processes and a real SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.adapters.audit.memory import MemoryAuditStore
from gateway.adapters.audit.sqlite import SQLiteAuditStore
from gateway.adapters.audit.store import open_store, verify_database
from gateway.domain.audit.chain import GENESIS
from gateway.errors import ConfigError, StorageError


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text
    assert "\n" not in text
    return text


def tamper(path: Path, *statements: str) -> None:
    """What an attacker with file access does: drop the guards, edit, commit."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER audit_events_no_update")
        conn.execute("DROP TRIGGER audit_events_no_delete")
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


async def filled(path: Path, n: int) -> SQLiteAuditStore:
    store = SQLiteAuditStore(path)
    for i in range(n):
        await store.append("session.open", f"u{i % 3}", {"host": "sg-1", "i": i})
    return store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


# -- round trip ----------------------------------------------------------------


async def test_round_trip_and_reopen(db: Path) -> None:
    store = await filled(db, 5)
    first = (await store.list())[0]
    assert (first.id, first.prev_hash) == (1, GENESIS)
    assert dict(first.data) == {"host": "sg-1", "i": 0}
    assert [e.id for e in await store.list(actor="u1")] == [2, 5]
    assert [e.id for e in await store.list(kind="session.open", actor="u0", after_id=1)] == [4]
    assert [e.id for e in await store.list(after_id=1, limit=2)] == [2, 3]
    assert await store.list(kind="nope") == []
    await store.close()

    again = SQLiteAuditStore(db)
    sixth = await again.append("session.close", "u0", {"bytes": 12})
    assert sixth.id == 6
    assert sixth.prev_hash == (await again.list(after_id=4))[0].hash
    assert (await again.verify()).count == 6
    await again.close()
    assert verify_database(f"sqlite:///{db}").count == 6
    assert verify_database(str(db)).ok


async def test_returned_event_equals_stored(db: Path) -> None:
    store = SQLiteAuditStore(db)
    event = await store.append("k", "ä", {"t": (1, 2), "n": {"b": None, "a": 1.5}})
    assert await store.list() == [event]
    await store.close()


async def test_guards_refuse_plain_updates_and_deletes(db: Path) -> None:
    await (await filled(db, 2)).close()
    conn = sqlite3.connect(db)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE audit_events SET actor = 'x' WHERE id = 1")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM audit_events WHERE id = 2")
    finally:
        conn.close()


# -- tampering -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("statements", "first_broken", "words"),
    [
        (
            ["""UPDATE audit_events SET data = '{"host":"evil","i":4}' WHERE id = 5"""],
            5,
            "event 5 hash does not match its contents (edited)",
        ),
        (["DELETE FROM audit_events WHERE id = 5"], 6, "event 5 missing before event 6"),
        (
            [
                "CREATE TEMP TABLE h AS SELECT id, hash FROM audit_events WHERE id IN (3, 7)",
                "UPDATE audit_events SET hash ="
                " (SELECT hash FROM h WHERE h.id = 10 - audit_events.id) WHERE id IN (3, 7)",
            ],
            3,
            "event 3 hash does not match",
        ),
        (["DELETE FROM audit_events WHERE id = 1"], 2, "chain starts at event 2"),
        (["UPDATE audit_events SET ts = ts + 1 WHERE id = 9"], 9, "edited"),
    ],
    ids=["edited-data", "deleted-middle", "swapped-hash", "deleted-first", "edited-ts"],
)
async def test_verify_finds_tampering(
    db: Path, statements: list[str], first_broken: int, words: str
) -> None:
    store = await filled(db, 10)
    assert (await store.verify()).ok
    tamper(db, *statements)
    for result in (await store.verify(), verify_database(str(db))):
        assert not result.ok
        assert result.first_broken == first_broken
        assert words in result.reason
    await store.close()


# -- concurrency -----------------------------------------------------------------


async def test_group_commit_500_concurrent(db: Path) -> None:
    store = SQLiteAuditStore(db)
    events = await asyncio.wait_for(
        asyncio.gather(*(store.append("k", f"u{i % 7}", {"i": i}) for i in range(500))), 60
    )
    assert sorted(e.id for e in events) == list(range(1, 501))
    assert store.commits < 500  # batched: far fewer fsyncs than events
    assert (await store.verify()).count == 500
    assert await store.list(limit=1000) == sorted(events, key=lambda e: e.id)
    await store.close()


APPENDER = """
import asyncio, sys
from gateway.adapters.audit.sqlite import SQLiteAuditStore

async def main(path: str, actor: str, n: int) -> None:
    store = SQLiteAuditStore(path)
    print("READY", flush=True)
    sys.stdin.readline()
    for start in range(0, n, 20):
        batch = range(start, min(n, start + 20))
        await asyncio.gather(*(store.append("test.append", actor, {"seq": i}) for i in batch))
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_two_processes_share_one_chain(db: Path) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            APPENDER,
            str(db),
            actor,
            "300",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for actor in ("p1", "p2")
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"READY\n"
        results = await asyncio.wait_for(
            asyncio.gather(*(p.communicate(b"GO\n") for p in procs)), 120
        )
        assert [p.returncode for p in procs] == [0, 0], results
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    result = verify_database(str(db))
    assert (result.ok, result.count) == (True, 600), result.reason
    store = SQLiteAuditStore(db)
    events = await store.list(limit=1000)
    await store.close()
    assert [e.id for e in events] == list(range(1, 601))
    seen = {(e.actor, e.data["seq"]) for e in events}
    assert seen == {(a, i) for a in ("p1", "p2") for i in range(300)}


KILLED = """
import asyncio, sys, time
from gateway.adapters.audit.sqlite import SQLiteAuditStore

async def main(path: str) -> None:
    store = SQLiteAuditStore(path)
    deadline = time.monotonic() + 60

    async def worker(w: int) -> None:
        for i in range(5000):
            if time.monotonic() > deadline:
                return
            event = await store.append("test.kill", f"w{w}", {"i": i, "pad": "x" * 200})
            print(f"ACK {event.id} {event.hash}", flush=True)

    await asyncio.gather(*(worker(w) for w in range(8)))

asyncio.run(main(sys.argv[1]))
"""


async def test_acknowledged_events_survive_sigkill(db: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED, str(db), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    acked: dict[int, str] = {}
    try:
        for _ in range(300):
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            _, event_id, digest = line.decode().split()
            acked[int(event_id)] = digest
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == -signal.SIGKILL
    for complete in rest.decode().split("\n")[:-1]:  # after the last newline: not an ACK
        _, event_id, digest = complete.split()
        acked[int(event_id)] = digest
    assert all(len(digest) == 64 for digest in acked.values())

    result = verify_database(str(db))
    assert result.ok, result.reason
    assert result.count >= len(acked) >= 300
    conn = sqlite3.connect(db)
    try:
        stored = dict(conn.execute("SELECT id, hash FROM audit_events").fetchall())
    finally:
        conn.close()
    missing = {i: h for i, h in acked.items() if stored.get(i) != h}
    assert not missing


# -- failures ---------------------------------------------------------------------


async def test_lock_held_too_long_fails_then_recovers(db: Path) -> None:
    store = SQLiteAuditStore(db, busy_timeout_ms=200)
    await store.append("k", "a", {"n": 1})
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(store.append("k", "a", {"lost": i}) for i in range(5)), return_exceptions=True
            ),
            30,
        )
        for outcome in outcomes:
            assert isinstance(outcome, StorageError)
            assert "locked" in one_line(outcome)
        assert (await store.verify()).count == 1  # reads still work under a writer
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()
    event = await store.append("k", "a", {"n": 2})
    assert event.id == 2
    assert (await store.verify()).count == 2
    await store.close()


async def test_disk_full_fails_then_recovers(db: Path) -> None:
    store = await filled(db, 1)
    assert store._conn is not None  # the writer thread is idle: safe to set a page limit
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StorageError, match="SQLITE_FULL") as info:
        await asyncio.wait_for(store.append("k", "a", {"pad": "x" * 100_000}), 30)
    one_line(info.value)
    store._conn.execute("PRAGMA max_page_count = 1000000")
    assert (await store.append("k", "a", {"pad": "x" * 100_000})).id == 2
    assert (await store.verify()).count == 2
    await store.close()


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() == 0:  # root ignores permission bits; procfs refuses new files to all
        yield Path("/proc/self")
        return
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    yield directory
    directory.chmod(0o755)


@pytest.mark.parametrize("as_url", [False, True])
def test_unwritable_directory_is_storage_error(unwritable_dir: Path, as_url: bool) -> None:
    path = unwritable_dir / "audit.db"
    with pytest.raises(StorageError) as info:
        open_store(f"sqlite:///{path}" if as_url else str(path))
    assert str(path) in one_line(info.value)


def test_missing_directory_is_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        SQLiteAuditStore(tmp_path / "no" / "such" / "audit.db")
    assert "unable to open" in one_line(info.value)


@pytest.mark.parametrize("content", [b"this is not a database\n" * 100, b""])
def test_foreign_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "other.db"
    path.write_bytes(content)
    with pytest.raises(StorageError, match="not a gpuhop audit database") as info:
        verify_database(str(path))
    one_line(info.value)
    if content:
        with pytest.raises(StorageError, match="not a gpuhop audit database"):
            SQLiteAuditStore(path)


def test_other_sqlite_databases_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users(name TEXT)")
    conn.commit()
    conn.close()
    for attempt in (lambda: SQLiteAuditStore(path), lambda: verify_database(str(path))):
        with pytest.raises(StorageError, match="not a gpuhop audit database") as info:
            attempt()
        one_line(info.value)


def test_verify_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no such audit database") as info:
        verify_database(str(tmp_path / "absent.db"))
    one_line(info.value)
    assert not (tmp_path / "absent.db").exists()


async def test_close_drains_then_refuses(db: Path) -> None:
    store = SQLiteAuditStore(db)
    tasks = [asyncio.create_task(store.append("k", "a", {"i": i})) for i in range(50)]
    await asyncio.sleep(0)  # let every task queue its event
    await store.close()
    events = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert sorted(e.id for e in events) == list(range(1, 51))
    with pytest.raises(StorageError, match="closed"):
        await store.append("k", "a", {})
    await store.close()  # idempotent


async def test_cancelled_append_leaves_store_usable(db: Path) -> None:
    store = SQLiteAuditStore(db)
    task = asyncio.create_task(store.append("k", "a", {"i": 1}))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    later = await store.append("k", "a", {"i": 2})
    assert later.id in (1, 2)  # the cancelled one may or may not have been committed
    assert (await store.verify()).ok
    await store.close()


async def test_bad_data_is_refused_before_queueing(db: Path) -> None:
    store = SQLiteAuditStore(db)
    with pytest.raises(ValueError):
        await store.append("k", "a", {"x": float("nan")})
    with pytest.raises(TypeError):
        await store.append("k", "a", {"x": object()})
    assert (await store.append("k", "a", {})).id == 1
    await store.close()


# -- URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://gw:s3cret@127.0.0.1/gpuhop",
        "mysql://x/y",
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/file.db",
        "memory://somewhere",
        "",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url)
    assert "s3cret" not in one_line(info.value)


def test_verify_database_refuses_memory() -> None:
    with pytest.raises(ConfigError):
        verify_database("memory://")


async def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    memory = open_store("memory://")
    assert isinstance(memory, MemoryAuditStore)
    await memory.close()
    for url, expected in [
        ("sqlite:///rel.db", tmp_path / "rel.db"),
        (f"sqlite:///{tmp_path}/abs.db", tmp_path / "abs.db"),  # sqlite:////abs/...
        ("plain.db", tmp_path / "plain.db"),
        (str(tmp_path / "plain-abs.db"), tmp_path / "plain-abs.db"),
    ]:
        store = open_store(url)
        assert isinstance(store, SQLiteAuditStore)
        assert Path(store.path) == expected
        await store.close()
        assert expected.exists()
