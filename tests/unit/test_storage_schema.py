"""Opening storage: URLs, WAL, the schema version check, and sharing a file with the audit log."""

from __future__ import annotations

import asyncio
import importlib.util
import sqlite3
import threading
from pathlib import Path

import pytest

from gateway.adapters.audit.store import open_store
from gateway.adapters.storage import SCHEMA_VERSION, Scope, open_storage, open_storage_blocking
from gateway.adapters.storage.engine import parse_storage_url
from gateway.domain.models import Mode
from gateway.errors import ConfigError, StorageError


@pytest.mark.parametrize(
    ("url", "driver", "database"),
    [
        ("sqlite:////abs/gw.db", "sqlite", "/abs/gw.db"),
        ("sqlite:///rel/gw.db", "sqlite", "rel/gw.db"),
        ("/plain/path.db", "sqlite", "/plain/path.db"),
        ("memory://", "sqlite", None),
        ("postgresql://u:p@127.0.0.1:5432/gpuhop", "postgresql+psycopg", "gpuhop"),
        ("postgresql+psycopg://u@127.0.0.1/gpuhop", "postgresql+psycopg", "gpuhop"),
        ("postgres://u@127.0.0.1/gpuhop", "postgresql+psycopg", "gpuhop"),
    ],
)
def test_storage_urls(url: str, driver: str, database: str | None) -> None:
    parsed = parse_storage_url(url)
    assert parsed.drivername == driver
    assert parsed.database == database


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("sqlite://", "no file path"),
        ("sqlite:///:memory:", "no file path"),
        ("mysql://u@h/db", "unsupported"),
        ("postgresql+psycopg2://u@h/db", "unsupported"),
        ("memory://x", "unsupported"),
    ],
)
def test_bad_storage_urls_are_config_errors(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_storage_url(url)


def test_postgresql_without_its_driver_says_so() -> None:
    if importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg is installed; the PostgreSQL suite covers this URL")
    with pytest.raises(ConfigError, match="psycopg"):
        open_storage_blocking("postgresql://u@127.0.0.1:1/gpuhop")


async def test_sqlite_file_is_wal_with_version(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    storage = await open_storage(f"sqlite:///{db}")
    await storage.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        version = conn.execute("SELECT value FROM storage_meta WHERE key='schema_version'")
        assert version.fetchone() == (str(SCHEMA_VERSION),)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"api_tokens", "session_records", "storage_meta"} <= tables


async def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    (await open_storage(f"sqlite:///{db}")).db.engine.dispose()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE storage_meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StorageError, match="schema version 99 is not supported"):
        await open_storage(f"sqlite:///{db}")


async def test_tables_without_version_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE api_tokens(id TEXT)")
    with pytest.raises(StorageError, match="no storage_meta"):
        await open_storage(f"sqlite:///{db}")


async def test_missing_table_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    (await open_storage(f"sqlite:///{db}")).db.engine.dispose()
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE session_records")
    with pytest.raises(StorageError, match="missing session_records"):
        await open_storage(f"sqlite:///{db}")


async def test_a_file_that_is_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    db.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(StorageError, match=str(db)):
        await open_storage(f"sqlite:///{db}")


async def test_an_unwritable_location_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        await open_storage(f"sqlite:///{tmp_path / 'missing-dir' / 'gw.db'}")


def test_many_openers_of_a_fresh_file_agree(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def opener() -> None:
        try:
            barrier.wait(timeout=10)
            open_storage_blocking(url).db.engine.dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    with sqlite3.connect(tmp_path / "gw.db") as conn:
        assert conn.execute("SELECT count(*) FROM storage_meta").fetchone() == (2,)


async def test_shares_a_file_with_the_audit_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    audit = open_store(url)  # the audit store creates the file first, as the gateway does
    storage = await open_storage(url)
    try:
        writes = [audit.append("session.start", "alice", {"i": i}) for i in range(20)]
        records = [
            storage.sessions.record_start(
                session_id=f"s{i}", user="alice", host="h", region="r", mode=Mode.PASSTHROUGH
            )
            for i in range(20)
        ]
        tokens = [storage.tokens.create("alice", Scope.CI, f"t{i}", 60) for i in range(5)]
        await asyncio.wait_for(asyncio.gather(*writes, *records, *tokens), 30)
        result = await audit.verify()
        assert result.ok and result.count == 20
        assert len(await storage.sessions.list(limit=100)) == 20
    finally:
        await storage.close()
        await audit.close()
    # Both reopen the shared file.
    again = open_store(url)
    storage = await open_storage(url)
    try:
        assert (await again.verify()).count == 20
        assert len(await storage.tokens.list()) == 5
    finally:
        await storage.close()
        await again.close()


async def test_audit_can_open_a_file_storage_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    await (await open_storage(url)).close()
    store = open_store(url)
    await store.close()
