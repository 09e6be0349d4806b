"""The audit log in one SQLite file, shared safely by several gateway processes.

Durability: WAL journal with ``synchronous=FULL``, so every commit fsyncs the WAL
before ``append`` returns; an acknowledged event survives ``kill -9`` and power
loss. Linearity: each commit runs under ``BEGIN IMMEDIATE`` (one writer at a time
across processes) and reads the last id and hash inside that transaction.
Throughput: one writer thread per store commits everything queued in one
transaction (group commit), so N concurrent appends cost about one fsync.
Anchoring: with a ``CheckpointSigner``, each commit also stores its new head's
signed checkpoint in the same transaction (``gateway.domain.audit.checkpoint``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

import structlog

from gateway.adapters.audit.delivery import deliver, link_batch, to_event
from gateway.domain.audit.chain import (
    AuditEvent,
    VerifyResult,
    freeze_data,
    verify_rows,
)
from gateway.domain.audit.checkpoint import Anchors, Checkpoint, verify_anchored
from gateway.errors import StorageError

if TYPE_CHECKING:
    from gateway.adapters.audit.anchor import CheckpointSigner

log = structlog.get_logger("gpuhop.audit")

SCHEMA_VERSION = 1
BATCH_MAX = 512  # events per transaction: bounds one commit's latency and memory
_SELECT = "SELECT id, ts, kind, actor, data, prev_hash, hash FROM audit_events"
_SELECT_ALL = _SELECT + " ORDER BY id"
_LIST = {  # (by kind, by actor) -> query; each uses the matching (column, id) index
    (False, False): _SELECT + " WHERE id > ? ORDER BY id LIMIT ?",
    (True, False): _SELECT + " WHERE kind = ? AND id > ? ORDER BY id LIMIT ?",
    (False, True): _SELECT + " WHERE actor = ? AND id > ? ORDER BY id LIMIT ?",
    (True, True): _SELECT + " WHERE kind = ? AND actor = ? AND id > ? ORDER BY id LIMIT ?",
}
_INSERT = (
    "INSERT INTO audit_events(id, ts, kind, actor, data, prev_hash, hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_CHECKPOINTS_TABLE = (
    "CREATE TABLE IF NOT EXISTS audit_checkpoints(event_id INTEGER PRIMARY KEY,"
    " hash TEXT NOT NULL, ts REAL NOT NULL, key_id TEXT NOT NULL, signature TEXT NOT NULL)"
)
_INSERT_CHECKPOINT = (
    "INSERT INTO audit_checkpoints(event_id, hash, ts, key_id, signature) VALUES (?, ?, ?, ?, ?)"
)
_SELECT_CHECKPOINTS = (
    "SELECT event_id, hash, ts, key_id, signature FROM audit_checkpoints ORDER BY event_id"
)

_SCHEMA = (
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE audit_events(id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL,"
    " actor TEXT NOT NULL, data TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
    "CREATE INDEX audit_events_kind ON audit_events(kind, id)",
    "CREATE INDEX audit_events_actor ON audit_events(actor, id)",
    # Stops accidents, not attackers (they can drop these); the chain catches attackers.
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events"
    " BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events"
    " BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
)


def _error(path: str, what: str, exc: BaseException) -> StorageError:
    code = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if code == "SQLITE_NOTADB":
        return StorageError(f"{path}: not a gpuhop audit database ({exc})")
    detail = " ".join(str(exc).split())  # one line, whatever sqlite said
    return StorageError(f"{path}: {what} failed ({code}: {detail})")


def _connect(path: str, busy_timeout_ms: int, mode: str = "rwc") -> sqlite3.Connection:
    """Open ``path`` with an SQLite URI mode: ``rwc`` (create), ``rw`` or ``ro``."""
    conn = sqlite3.connect(
        f"file:{quote(path)}?mode={mode}",
        uri=True,
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
        check_same_thread=False,  # each connection is used by one thread at a time
    )
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    except BaseException:
        conn.close()
        raise
    return conn


def _check_schema(conn: sqlite3.Connection, path: str) -> bool:
    """True if the schema exists and is ours; False if the database is empty."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in tables or "audit_events" not in tables:
        # Empty, or holding only gpuhop's other tables (storage_meta marks them): ours to set up.
        if tables and "storage_meta" not in tables:
            raise StorageError(f"{path}: not a gpuhop audit database (no audit tables)")
        return False
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None or row[0] != str(SCHEMA_VERSION):
        found = "none" if row is None else row[0]
        raise StorageError(
            f"{path}: audit schema version {found} is not supported (expected {SCHEMA_VERSION})"
        )
    return True


def _set_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> object:
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers BUSY
    # at once (no busy handler) when another process is opening the same file.
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.005
    while True:
        try:
            return conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _open_writer(path: str, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = _connect(path, busy_timeout_ms)
    try:
        mode = _set_wal(conn, busy_timeout_ms)
        if str(mode).lower() != "wal":
            raise StorageError(f"{path}: cannot use WAL journal (got {mode})")
        # FULL: fsync the WAL on every commit. Events acknowledged to callers must
        # survive kill -9 and power loss; NORMAL would only survive the former.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not _check_schema(conn, path):
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?), ('app', 'gpuhop')",
                    (str(SCHEMA_VERSION),),
                )
            conn.execute(_CHECKPOINTS_TABLE)  # a no-op once the migrations made it
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    except BaseException:
        conn.close()
        raise
    return conn


def _walk(conn: sqlite3.Connection, anchors: Anchors | None) -> VerifyResult:
    if anchors is None:
        # One SELECT is one read snapshot: concurrent appends cannot tear it.
        return verify_rows(conn.execute(_SELECT_ALL))
    conn.execute("BEGIN")  # both SELECTs read one snapshot
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        checkpoints: Iterable[tuple[object, ...]] = (
            conn.execute(_SELECT_CHECKPOINTS) if "audit_checkpoints" in tables else ()
        )
        from gateway.adapters.audit.anchor import checkpoint_rows

        return verify_anchored(conn.execute(_SELECT_ALL), checkpoint_rows(checkpoints), anchors)
    finally:
        conn.execute("ROLLBACK")


def verify_file(
    path: str, busy_timeout_ms: int = 5000, anchors: Anchors | None = None
) -> VerifyResult:
    """Verify the chain in a database file, opened read-only; ``StorageError`` if unusable.

    With ``anchors``, also against its signed checkpoints and external anchors.
    """
    if not os.path.isfile(path):
        raise StorageError(f"{path}: no such audit database")
    try:
        with contextlib.closing(_connect(path, busy_timeout_ms, "ro")) as conn:
            if not _check_schema(conn, path):
                raise StorageError(f"{path}: not a gpuhop audit database (empty)")
            return _walk(conn, anchors)
    except sqlite3.Error as exc:
        raise _error(path, "verify", exc) from None


@dataclass(slots=True)
class _Pending:
    kind: str
    actor: str
    data_text: str
    data: Mapping[str, object]
    future: asyncio.Future[AuditEvent]


class SQLiteAuditStore:
    """``AuditStore`` on a SQLite file; open once at start-up (this opens the file)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_ms: int = 10_000,
        signer: CheckpointSigner | None = None,
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.busy_timeout_ms = busy_timeout_ms
        self.signer = signer
        self.last_checkpoint: Checkpoint | None = None  # the newest this store committed
        self.commits = 0  # transactions committed by this store (group-commit metric)
        try:
            self._conn: sqlite3.Connection | None = _open_writer(self.path, busy_timeout_ms)
        except sqlite3.Error as exc:
            raise _error(self.path, "open", exc) from None
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name=f"audit-writer:{self.path}", daemon=True
        )
        self._thread.start()

    async def append(self, kind: str, actor: str, data: Mapping[str, object]) -> AuditEvent:
        if self._closed or not self._thread.is_alive():
            raise StorageError(f"{self.path}: audit store is closed")
        if not isinstance(kind, str) or not isinstance(actor, str):
            raise TypeError("audit kind and actor must be str")
        data_text, frozen = freeze_data(data)
        future: asyncio.Future[AuditEvent] = asyncio.get_running_loop().create_future()
        self._queue.put(_Pending(kind, actor, data_text, frozen, future))
        return await future

    async def list(
        self,
        *,
        kind: str | None = None,
        actor: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> builtins.list[AuditEvent]:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        return await asyncio.to_thread(self._list, kind, actor, after_id, limit)

    async def verify(self) -> VerifyResult:
        return await asyncio.to_thread(self._verify)

    async def close(self) -> None:
        """Commit everything already queued, then stop the writer."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        _log_head(self.path, self.last_checkpoint)

    # -- reads: a fresh connection per call, on a worker thread ---------------

    def _reader(self) -> sqlite3.Connection:
        # "rw", not "ro": the last connection to close can then tidy the -wal file.
        return _connect(self.path, self.busy_timeout_ms, "rw")

    def _list(
        self, kind: str | None, actor: str | None, after_id: int, limit: int
    ) -> builtins.list[AuditEvent]:
        sql = _LIST[kind is not None, actor is not None]
        args = [v for v in (kind, actor) if v is not None] + [after_id, limit]
        try:
            with contextlib.closing(self._reader()) as conn:
                return [to_event(row) for row in conn.execute(sql, args)]
        except sqlite3.Error as exc:
            raise _error(self.path, "list", exc) from None
        except ValueError as exc:
            raise StorageError(f"{self.path}: an audit event's data is not JSON ({exc})") from None

    def _verify(self) -> VerifyResult:
        anchors = None
        if self.signer is not None:
            from gateway.adapters.audit.anchor import anchors_for

            anchors = anchors_for(self.signer.trusted(), self.signer.anchor_file)
        try:
            with contextlib.closing(self._reader()) as conn:
                return _walk(conn, anchors)
        except sqlite3.Error as exc:
            raise _error(self.path, "verify", exc) from None

    # -- the writer thread ----------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < BATCH_MAX:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        # Appends racing close() from another thread: refuse them rather than hang.
        while True:
            try:
                late = self._queue.get_nowait()
            except queue.Empty:
                break
            if late is not None:
                deliver(late.future, StorageError(f"{self.path}: audit store is closed"))

    def _commit(self, batch: builtins.list[_Pending]) -> None:
        try:
            if self._conn is None:
                self._conn = _open_writer(self.path, self.busy_timeout_ms)
            events, checkpoint = self._insert(self._conn, batch)
        except Exception as exc:
            self._abandon()
            what = f"append of {len(batch)} event(s)"
            for pending in batch:  # never acknowledge what was not committed
                if isinstance(exc, sqlite3.Error):
                    deliver(pending.future, _error(self.path, what, exc))
                elif isinstance(exc, StorageError):
                    deliver(pending.future, StorageError(str(exc)))
                else:
                    deliver(pending.future, StorageError(f"{self.path}: {what} failed ({exc})"))
            return
        self.commits += 1
        if checkpoint is not None and self.signer is not None:
            self.last_checkpoint = checkpoint
            self.signer.committed(checkpoint)
        for pending, event in zip(batch, events, strict=True):
            deliver(pending.future, event)

    def _insert(
        self, conn: sqlite3.Connection, batch: builtins.list[_Pending]
    ) -> tuple[builtins.list[AuditEvent], Checkpoint | None]:
        conn.execute("BEGIN IMMEDIATE")
        last = conn.execute("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1").fetchone()
        # commit time, taken under the write lock
        linked = link_batch(last, time.time(), batch, self.signer)
        conn.executemany(_INSERT, linked.rows)
        if linked.checkpoint_row is not None:
            conn.execute(_INSERT_CHECKPOINT, linked.checkpoint_row)
        conn.execute("COMMIT")
        return linked.events, linked.checkpoint

    def _abandon(self) -> None:
        """Roll back a failed batch; drop the connection if even that fails."""
        conn = self._conn
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            conn.close()
            self._conn = None


def _log_head(where: str, checkpoint: Checkpoint | None) -> None:
    """The head this store last signed, for log shippers (an anchor off the machine)."""
    if checkpoint is not None:
        log.info(
            "audit head",
            database=where,
            head=f"{checkpoint.event_id}:{checkpoint.hash}",
            key_id=checkpoint.key_id,
        )
