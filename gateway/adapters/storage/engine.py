"""One SQL database for identity and accounting data, opened from the storage URL.

URLs (the same ones the audit log takes, so both can share one file):

- ``sqlite:////abs/path.db``, ``sqlite:///relative.db`` or a plain file path: a
  SQLite file in WAL mode. Writes take ``BEGIN IMMEDIATE`` so several gateway
  processes (and the audit writer, which shares the file) queue on the busy
  timeout instead of failing on a lock upgrade; ``synchronous=FULL`` makes an
  acknowledged write survive power loss, as for the audit log.
- ``memory://``: a private in-memory SQLite database, every call serialised on
  one connection. The in-package fake for unit tests; nothing is durable.
- ``postgresql+psycopg://...`` (or ``postgresql://``): PostgreSQL through
  psycopg 3, for several gateway replicas on one database. Each session runs
  with ``synchronous_commit=on`` (acknowledged means durable, whatever the
  server's default). A call that could not reach the server, or lost it before
  committing, is retried with backoff for up to ``PG_RETRY_S`` (a restart of
  the server is a pause, not an error); a call that lost it *while* committing
  is not retried (it may have committed) and fails.

Every blocking call runs in a worker thread (``asyncio.to_thread``); SQLAlchemy
errors become ``StorageError`` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from gateway.errors import ConfigError, StorageError

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
PG_CONNECT_TIMEOUT_S = 5
PG_RETRY_S = 15.0  # how long a PostgreSQL call waits for the server to come back
_EXPECTED = "expected sqlite:///PATH, postgresql+psycopg://..., memory:// or a file path"
_IMMEDIATE = "gpuhop_immediate"  # execution option: begin the transaction as a writer


def parse_storage_url(url: str) -> URL:
    """The SQLAlchemy URL a storage URL names; ``ConfigError`` if unsupported."""
    text = url.strip()
    if not text:
        raise ConfigError(f"storage URL is empty ({_EXPECTED})")
    if "://" not in text:
        return URL.create("sqlite", database=text)
    if text.lower() == "memory://":
        return URL.create("sqlite")
    try:
        parsed = make_url(text)
    except ArgumentError as exc:
        raise ConfigError(f"storage URL is not valid ({_EXPECTED}): {exc}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError(f"storage URL has no file path ({_EXPECTED})")
        return parsed.set(drivername="sqlite")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    raise ConfigError(f"unsupported storage URL scheme {parsed.drivername!r} ({_EXPECTED})")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # SQLAlchemy emits BEGIN itself (see _sqlite_begin); the driver must not.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _set_wal(engine: Engine) -> None:
    """Switch the file to WAL (persistent); retried, as SQLite answers BUSY at once here."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        raw = engine.raw_connection()  # outside any transaction: WAL cannot switch inside one
        try:
            cursor = raw.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            row = cursor.fetchone()
            cursor.close()
            mode = row[0] if row else None
            break
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code != sqlite3.SQLITE_BUSY or time.monotonic() + delay > deadline:
                raise
        finally:
            raw.close()
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    if str(mode).lower() != "wal":
        raise StorageError(f"{engine.url.database}: cannot use WAL journal (got {mode})")


def _postgres_session(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("SET synchronous_commit TO on")
    finally:
        cursor.close()
    dbapi_conn.commit()


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        try:
            engine = sa.create_engine(
                url,
                pool_pre_ping=True,  # a pooled connection from before a server restart is dead
                connect_args={
                    "connect_timeout": PG_CONNECT_TIMEOUT_S,
                    "application_name": "gpuhop-gateway",
                },
            )
        except ImportError as exc:
            raise ConfigError(
                f"PostgreSQL storage needs the psycopg driver ({exc.name} is not installed)"
            ) from None
        sa.event.listen(engine, "connect", _postgres_session)
        return engine
    if url.database:
        engine = sa.create_engine(url)
    else:
        engine = sa.create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    sa.event.listen(engine, "begin", _sqlite_begin)
    if url.database:
        _set_wal(engine)
    return engine


class Database:
    """An engine plus the rules for using it from the event loop.

    ``read`` and ``write`` run a function of a ``Connection`` inside one
    transaction in a worker thread; ``write`` starts it as a writer.
    """

    def __init__(self, engine: Engine, label: str, retry_s: float | None = None) -> None:
        self.engine = engine
        self.label = label
        if retry_s is None:
            retry_s = PG_RETRY_S if engine.dialect.name == "postgresql" else 0.0
        self.retry_s = retry_s
        # One shared in-memory connection must not be used by two threads at once.
        self._lock = threading.Lock() if isinstance(engine.pool, StaticPool) else None

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await self._retrying(fn, False)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return await self._retrying(fn, True)

    async def _retrying(self, fn: Callable[[Connection], T], write: bool) -> T:
        # Waits between tries happen on the loop, not in a worker thread.
        deadline = time.monotonic() + self.retry_s
        delay = 0.05
        while True:
            try:
                return await asyncio.to_thread(self.run, fn, write)
            except StorageUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def run(self, fn: Callable[[Connection], T], write: bool) -> T:
        """Run ``fn`` in one transaction, blocking; for worker threads and start-up."""
        if self._lock is None:
            return self._run(fn, write)
        with self._lock:
            return self._run(fn, write)

    def _run(self, fn: Callable[[Connection], T], write: bool) -> T:
        committing = False
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{_IMMEDIATE: write})
                with conn.begin() as transaction:
                    result = fn(conn)
                    committing = True
                    transaction.commit()
                    return result
        except SQLAlchemyError as exc:
            error = storage_error(self.label, exc)
            if not committing and _unreachable(exc):
                raise StorageUnavailable(str(error)) from None
            raise error from None

    async def close(self) -> None:
        """Close pooled connections; later calls open new ones."""
        await asyncio.to_thread(self.engine.dispose)


class StorageUnavailable(StorageError):
    """The database could not be reached, and the call surely did not commit (safe to retry)."""


def _unreachable(exc: SQLAlchemyError) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    orig = getattr(exc, "orig", None)
    if orig is None or type(orig).__module__.split(".")[0] != "psycopg":
        return False
    import psycopg

    # OperationalError: refused, reset, the server shutting down or starting up.
    return isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)


def storage_error(label: str, exc: Exception) -> StorageError:
    """One line naming the database and what the driver said, never the password."""
    orig = getattr(exc, "orig", None) or exc
    detail = " ".join(str(orig).split())
    return StorageError(f"{label}: storage query failed ({type(orig).__name__}: {detail})")


def open_database(url: str) -> Database:
    """Open the database a storage URL names (blocking: call at start-up or in a thread).

    ``ConfigError`` for a URL it does not understand, ``StorageError`` when the
    database cannot be opened.
    """
    parsed = parse_storage_url(url)
    label = parsed.database or "memory://"
    if parsed.get_backend_name() != "sqlite":
        label = parsed.render_as_string(hide_password=True)
    try:
        engine = _create_engine(parsed)
    except (SQLAlchemyError, sqlite3.Error) as exc:
        raise storage_error(label, exc) from None
    return Database(engine, label)
