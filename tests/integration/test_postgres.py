"""The storage and audit stores on a real PostgreSQL (and, where the contract is shared, SQLite).

Runs against the private server of ``pg_server`` (one per test run). Tests that
stop the server use one of their own (``own_pg``), so nothing else sees the outage.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from gateway.adapters.audit import postgres as pg_audit
from gateway.adapters.audit.pgconn import conninfo_of
from gateway.adapters.audit.postgres import PostgresAuditStore
from gateway.adapters.audit.sqlite import SQLiteAuditStore
from gateway.adapters.audit.store import open_store, verify_database
from gateway.adapters.storage import Scope, migrate, open_storage
from gateway.adapters.storage.schema import metadata
from gateway.cli.root import main as gateway_cli
from gateway.domain.audit.chain import GENESIS
from gateway.domain.models import Mode
from gateway.errors import ConfigError, StorageError
from gateway.ports import AuditStore, append_within
from tests.integration.pg import PgServer, start_postgres

pytestmark = pytest.mark.postgres


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gw.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.create_database()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    return pg_server.create_database()


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PgServer]:
    """A server this module may stop and restart."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.close()


def sql(url: str, statement: str, *args: object) -> list[tuple[Any, ...]]:
    """Run one statement as the superuser (what an attacker with database access can do)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute(statement.replace("%s", "?"), args).fetchall()
    info, _ = conninfo_of(url)
    with psycopg.connect(info, autocommit=True) as conn:
        cur = conn.execute(statement, args)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


# -- the AuditStore contract, on both backends ---------------------------------------


async def test_round_trip_list_and_reopen(url: str) -> None:
    store = open_store(url)
    data = {"host": "sg-1", "text": 'é ✓ \u2028 "q" \\', "nested": {"b": [1, 2.5, None]}}
    first = await store.append("session.start", "alice", data)
    for i in range(9):
        await store.append("session.end" if i % 2 else "channel.exec", f"u{i % 3}", {"i": i})
    assert (first.id, first.prev_hash) == (1, GENESIS)
    listed = await store.list(limit=100)
    assert listed[0] == first and dict(listed[0].data) == data
    assert [e.id for e in await store.list(kind="session.end")] == [3, 5, 7, 9]
    assert [e.id for e in await store.list(actor="u1", after_id=4, limit=1)] == [6]
    assert await store.list(limit=0) == []
    await store.close()
    again = open_store(url)
    assert (await again.verify()).count == 10
    assert (await again.append("k", "a", {})).id == 11
    await again.close()
    assert verify_database(url).ok


async def test_group_commit_500_concurrent(url: str) -> None:
    store = open_store(url)
    events = await asyncio.wait_for(
        asyncio.gather(*(store.append("k", f"u{i % 7}", {"i": i}) for i in range(500))), 60
    )
    assert sorted(e.id for e in events) == list(range(1, 501))
    commits = store.commits  # type: ignore[attr-defined]
    assert commits < 500
    assert await store.list(limit=1000) == sorted(events, key=lambda e: e.id)
    await store.close()


async def test_close_drains_then_refuses(url: str) -> None:
    store = open_store(url)
    tasks = [asyncio.create_task(store.append("k", "a", {"i": i})) for i in range(50)]
    await asyncio.sleep(0)
    await store.close()
    events = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert sorted(e.id for e in events) == list(range(1, 51))
    with pytest.raises(StorageError, match="closed"):
        await store.append("k", "a", {})


async def test_bad_input_is_refused_before_queueing(url: str) -> None:
    store = open_store(url)
    with pytest.raises(ValueError):
        await store.append("k", "a", {"x": float("nan")})
    with pytest.raises(TypeError):
        await store.append("k", "a", {"x": object()})
    if isinstance(store, PostgresAuditStore):
        with pytest.raises(ValueError, match="NUL"):
            await store.append("k\x00", "a", {})
    event = await store.append("k", "a", {"nul": "a\x00b"})  # escaped in JSON: fine
    assert event.id == 1 and (await store.verify()).ok
    await store.close()


async def test_storage_tokens_and_sessions(url: str) -> None:
    await open_store(url).close()  # as the gateway does: audit first (runs the migrations)
    storage = await open_storage(url)
    try:
        token, secret = await storage.tokens.create("alice", Scope.ADMIN, "ops", 600)
        assert (await storage.tokens.verify(secret)).id == token.id
        await storage.tokens.revoke(token.id)
        assert (await storage.tokens.list())[0].revoked_at is not None
        for i in range(30):
            await storage.sessions.record_start(
                session_id=f"s{i:02}", user="alice", host="sg-1", region="sg",
                mode=Mode.PASSTHROUGH, started_at=1000.0 + i,
            )  # fmt: skip
        ended = await storage.sessions.record_end("s03", bytes_up=1, bytes_down=2**40)
        assert ended.bytes_down == 2**40 and not ended.live
        page = await storage.sessions.list(limit=10)
        assert [r.id for r in page] == [f"s{i:02}" for i in range(29, 19, -1)]
        rest = await storage.sessions.list(limit=100, after=page[-1].id)
        assert len(rest) == 20
        with pytest.raises(StorageError):
            await storage.sessions.record_start(
                session_id="s01", user="x", host="h", region="r", mode=Mode.RECORDED
            )
    finally:
        await storage.close()


# -- migrations ----------------------------------------------------------------------


def test_head_matches_the_scripts() -> None:
    assert migrate.revisions()[-1] == migrate.HEAD


def test_baseline_matches_the_live_schema(tmp_path: Path) -> None:
    """The frozen baseline creates what schema.py queries and what sqlite.py would create."""
    migrated = tmp_path / "migrated.db"
    migrate.upgrade(f"sqlite:///{migrated}")
    legacy = tmp_path / "legacy.db"
    asyncio.run(SQLiteAuditStore(legacy).close())  # the audit store's own DDL

    def ddl(path: Path, names: set[str]) -> dict[str, str]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")
            return {n: s for n, s in rows if n in names or n.startswith("audit_events")}

    assert ddl(migrated, {"meta"}) == ddl(legacy, {"meta"})
    with sqlite3.connect(migrated) as conn:
        for table in metadata.sorted_tables:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table.name})")]
            assert cols == [c.name for c in table.columns], table.name
            indexes = {r[1] for r in conn.execute(f"PRAGMA index_list({table.name})")}
            assert {i.name for i in table.indexes} <= indexes


def test_fresh_database_is_at_head_on_both(url: str) -> None:
    assert migrate.current(url) is None
    assert migrate.upgrade(url) == (None, migrate.HEAD)
    assert migrate.current(url) == migrate.HEAD
    assert migrate.upgrade(url) == (migrate.HEAD, migrate.HEAD)  # idempotent


def test_concurrent_starters_migrate_once(pg_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def starter() -> None:
        try:
            barrier.wait(timeout=10)
            migrate.ensure_url(pg_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=starter) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sql(pg_url, "SELECT version_num FROM alembic_version") == [(migrate.HEAD,)]
    assert sql(pg_url, "SELECT count(*) FROM storage_meta") == [(2,)]


NEXT = f"{int(migrate.HEAD) + 1:04d}"  # a revision after this gpuhop's newest


@pytest.fixture
def next_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Scripts with a revision NEXT after the newest; call the result to make it current."""
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / f"v{NEXT}_extra.py").write_text(
        '"""Add a table."""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f'revision = "{NEXT}"\ndown_revision = "{migrate.HEAD}"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n"
        '    op.create_table("extra", sa.Column("id", sa.Integer, primary_key=True))\n\n\n'
        "def downgrade() -> None:\n"
        '    op.drop_table("extra")\n'
    )

    def activate() -> None:
        monkeypatch.setattr(migrate, "MIGRATIONS_DIR", scripts)
        monkeypatch.setattr(migrate, "HEAD", NEXT)

    return activate


async def test_behind_is_refused_until_upgraded(
    url: str, next_revision: Callable[[], None]
) -> None:
    head = migrate.HEAD
    migrate.upgrade(url)  # at this gpuhop's newest
    next_revision()
    with pytest.raises(migrate.SchemaBehind, match="db upgrade") as info:
        open_store(url)
    assert "\n" not in str(info.value) and head in str(info.value)
    with pytest.raises(migrate.SchemaBehind):
        await open_storage(url)
    assert migrate.upgrade(url) == (head, NEXT)
    assert sql(url, "SELECT count(*) FROM extra") == [(0,)]
    store = open_store(url)
    await store.close()
    await (await open_storage(url)).close()


def test_newer_schema_is_refused(url: str) -> None:
    migrate.upgrade(url)
    sql(url, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StorageError, match="newer than this gpuhop"):
        open_store(url)


def _db(*args: str) -> Result:
    return CliRunner().invoke(gateway_cli, ["db", *args], catch_exceptions=False)


def test_db_current_fails_until_upgraded(url: str, next_revision: Callable[[], None]) -> None:
    head = migrate.HEAD
    empty = _db("current", "--database", url)
    assert empty.exit_code == 3
    assert (
        empty.stderr
        == f"gpuhop-gateway: error: upgrade due: at empty or pre-migration, code wants {head}\n"
    )
    assert _db("upgrade", "--database", url).exit_code == 0
    at_head = _db("current", "--database", url)
    assert (at_head.exit_code, at_head.stdout) == (0, f"{head}\n")
    next_revision()
    behind = _db("current", "--database", url)
    assert behind.exit_code == 3
    assert behind.stderr == f"gpuhop-gateway: error: upgrade due: at {head}, code wants {NEXT}\n"
    upgraded = _db("upgrade", "--database", url)
    assert upgraded.exit_code == 0 and f"revision {NEXT} (was {head})" in upgraded.stdout
    assert _db("current", "--database", url).stdout == f"{NEXT}\n"


def test_db_current_refuses_a_newer_schema(url: str) -> None:
    migrate.upgrade(url)
    sql(url, "UPDATE alembic_version SET version_num = '9999'")
    newer = _db("current", "--database", url)
    assert newer.exit_code == 3 and "at 9999, newer than this gpuhop's" in newer.stderr


def test_db_commands_find_the_database_by_config_or_url(url: str, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nstorage_url = "{url}"\n')
    assert _db("upgrade", "--config", str(config)).exit_code == 0
    assert _db("current", "--config", str(config)).stdout == f"{migrate.HEAD}\n"
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert _db("current", "--config", str(config), "--database", other).exit_code == 3
    from_env = CliRunner(env={"GPUHOP_GATEWAY__STORAGE_URL": url}).invoke(
        gateway_cli, ["db", "current"], catch_exceptions=False
    )
    assert (from_env.exit_code, from_env.stdout) == (0, f"{migrate.HEAD}\n")  # a Job's way
    neither = _db("current")
    assert neither.exit_code == 2 and "--database URL" in neither.stderr


def test_foreign_database_is_refused(url: str) -> None:
    sql(url, "CREATE TABLE users(name TEXT)")
    with pytest.raises(StorageError, match="not a gpuhop database"):
        open_store(url)
    with pytest.raises(StorageError, match="not a gpuhop database"):
        asyncio.run(open_storage(url))


async def test_pre_migration_sqlite_file_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = SQLiteAuditStore(path)  # what gpuhop 0.1 did first: audit tables, no alembic
    await old.append("session.start", "alice", {"i": 1})
    await old.close()
    assert migrate.current(str(path)) is None
    # Adopted as 0001, which is behind: upgrading stays the operator's step.
    with pytest.raises(migrate.SchemaBehind, match="predates migrations"):
        await open_storage(f"sqlite:///{path}")
    assert migrate.upgrade(str(path)) == (None, migrate.HEAD)
    storage = await open_storage(f"sqlite:///{path}")
    await storage.close()
    assert migrate.current(str(path)) == migrate.HEAD
    store = open_store(str(path))
    assert (await store.verify()).count == 1
    await store.close()


# -- PostgreSQL specifics ------------------------------------------------------------


async def test_guards_and_tamper_detection(pg_url: str) -> None:
    store = open_store(pg_url)
    for i in range(5):
        await store.append("session.start", "alice", {"i": i})
    await store.close()
    for statement in (
        "UPDATE audit_events SET actor = 'eve'",
        "DELETE FROM audit_events WHERE id = 5",
        "TRUNCATE audit_events",
    ):
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            sql(pg_url, statement)
    sql(pg_url, "ALTER TABLE audit_events DISABLE TRIGGER USER")  # the owner can; the chain tells
    sql(pg_url, "UPDATE audit_events SET data = replace(data, '3', '4') WHERE id = 4")
    result = verify_database(pg_url)
    assert (result.ok, result.first_broken, result.count) == (False, 4, 3)
    assert "edited" in result.reason


def test_verify_refuses_what_is_not_an_audit_database(pg_server: PgServer) -> None:
    empty = pg_server.create_database()
    with pytest.raises(StorageError, match="not a gpuhop audit database"):
        verify_database(empty)
    assert migrate.current(empty) is None  # verify never migrates


def test_unreachable_server_is_one_line_without_password() -> None:
    with pytest.raises(StorageError) as info:
        open_store("postgresql://gw:s3cret@127.0.0.1:1/gpuhop")
    text = str(info.value)
    assert "\n" not in text and "s3cret" not in text and "127.0.0.1" in text
    with pytest.raises(ConfigError):
        open_store("postgresql+psycopg2://gw:s3cret@127.0.0.1:1/gpuhop")


APPENDER = """
import asyncio, sys
from gateway.adapters.audit.store import open_store

async def main(url: str, actor: str, n: int) -> None:
    store = open_store(url)
    print("READY", flush=True)
    sys.stdin.readline()
    for start in range(0, n, 25):
        batch = range(start, min(n, start + 25))
        await asyncio.gather(*(store.append("test.append", actor, {"seq": i}) for i in batch))
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_replica_processes_share_one_chain(pg_url: str) -> None:
    migrate.upgrade(pg_url)  # once up front, so the replicas' starts do not race on it
    actors = ("p1", "p2", "p3", "p4")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            APPENDER,
            pg_url,
            actor,
            "400",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for actor in actors
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"READY\n"
        results = await asyncio.wait_for(
            asyncio.gather(*(p.communicate(b"GO\n") for p in procs)), 120
        )
        assert [p.returncode for p in procs] == [0] * len(procs), results
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    result = verify_database(pg_url)
    assert (result.ok, result.count) == (True, 1600), result.reason
    rows = sql(pg_url, "SELECT actor, data FROM audit_events ORDER BY id")
    assert sorted(rows) == sorted((a, f'{{"seq":{i}}}') for a in actors for i in range(400))


# -- outages: a server that goes away and comes back ---------------------------------


class _CommitFails:
    """Wraps the writer's connection: the next COMMIT is lost on the way back (or out)."""

    def __init__(self, conn: psycopg.Connection[Any], *, lands: bool) -> None:
        self._conn = conn
        self._lands = lands
        self.tripped = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def commit(self) -> None:
        if self.tripped:
            self._conn.commit()
            return
        self.tripped = True
        if self._lands:
            self._conn.commit()
        self._conn.close()
        raise psycopg.OperationalError("server closed the connection unexpectedly")


@pytest.mark.parametrize("lands", [True, False])
async def test_commit_in_doubt_is_resolved_without_duplicates(pg_url: str, lands: bool) -> None:
    store = open_store(pg_url)
    assert isinstance(store, PostgresAuditStore)
    await store.append("k", "a", {"i": -1})
    assert store._conn is not None
    trap = _CommitFails(store._conn, lands=lands)
    store._conn = trap  # type: ignore[assignment]  # the writer is idle: it waits on the queue
    events = await asyncio.wait_for(
        asyncio.gather(*(store.append("k", "a", {"i": i}) for i in range(20))), 30
    )
    assert trap.tripped
    assert sorted(e.id for e in events) == list(range(2, 22))
    result = await store.verify()
    assert (result.ok, result.count) == (True, 21)
    await store.close()


async def test_restart_buffers_in_order_and_loses_nothing(own_pg: PgServer) -> None:
    url = own_pg.create_database()
    store = open_store(url)
    assert isinstance(store, PostgresAuditStore)
    await store.append("before", "a", {})
    await asyncio.to_thread(own_pg.stop)
    try:
        waiting = [asyncio.create_task(store.append("during", "a", {"i": i})) for i in range(300)]
        await asyncio.sleep(1.0)
        assert not any(t.done() for t in waiting)  # nothing acknowledged while it is down
        assert not store.available and store.pending == 300
    finally:
        await asyncio.to_thread(own_pg.start)
    events = await asyncio.wait_for(asyncio.gather(*waiting), 60)
    assert [e.id for e in events] == list(range(2, 302))  # in the order they were appended
    assert [e.data["i"] for e in events] == list(range(300))
    assert store.available and store.outages == 1
    assert (await store.verify()).count == 301
    await store.close()


async def test_waiting_is_bounded(own_pg: PgServer) -> None:
    url = own_pg.create_database()
    migrate.upgrade(url)
    store = PostgresAuditStore(url)
    store.max_buffer_bytes = 8 * 1024
    store.close_timeout_s = 1.0
    await asyncio.to_thread(own_pg.stop)
    try:
        with pytest.raises(StorageError, match=r"within 0\.5 s"):
            await append_within(store, "session.start", "alice", {"session_id": "s1"}, 0.5)
        flood = [
            asyncio.create_task(store.append("k", "a", {"pad": "x" * 500, "i": i}))
            for i in range(100)
        ]
        await asyncio.sleep(0.2)
        refused = [t for t in flood if t.done()]
        assert 50 < len(refused) < 100  # the buffer holds a few, refuses the rest at once
        assert all("buffer full" in str(t.exception()) for t in refused)
        await store.close()  # gives up after close_timeout_s, acknowledging nothing
        for task in flood:
            with pytest.raises(StorageError, match=r"buffer full|not recorded"):
                await task
    finally:
        await asyncio.to_thread(own_pg.start)
    assert [e.kind for e in await _fresh_list(url)] == []  # the withdrawn start never landed


async def _fresh_list(url: str) -> list[Any]:
    store: AuditStore = open_store(url)
    try:
        return await store.list(limit=1000)
    finally:
        await store.close()


async def test_storage_calls_ride_out_a_restart(own_pg: PgServer) -> None:
    url = own_pg.create_database()
    storage = await open_storage(url)
    try:
        await storage.tokens.create("alice", Scope.USER, "before", 60)
        await asyncio.to_thread(own_pg.stop)
        try:
            later = asyncio.create_task(storage.tokens.create("alice", Scope.USER, "during", 60))
            await asyncio.sleep(1.0)
            assert not later.done()
        finally:
            await asyncio.to_thread(own_pg.start)
        await asyncio.wait_for(later, 30)
        assert [t.name for t in await storage.tokens.list()] == ["before", "during"]
    finally:
        await storage.close()


def test_cli_verify_on_postgres(pg_url: str) -> None:
    async def fill() -> None:
        store = open_store(pg_url)
        for i in range(3):
            await store.append("k", "a", {"i": i})
        await store.close()

    asyncio.run(fill())
    cmd = [sys.executable, "-m", "gateway.cli", "audit", "verify", "--database", pg_url]
    done = subprocess.run(cmd, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert b"audit chain ok: 3 events" in done.stdout


def test_module_constants() -> None:
    assert pg_audit.CHAIN_LOCK != migrate.LOCK_KEY
    assert pg_audit.CHAIN_LOCK < 2**63 and migrate.LOCK_KEY < 2**63
