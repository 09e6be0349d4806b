"""The audit log in PostgreSQL, appended to by several gateway replicas at once.

Linearity: each commit takes a transaction-level advisory lock
(``pg_advisory_xact_lock``), so one replica at a time extends the chain; it reads
the head id and hash *after* taking the lock, inserts ids head+1.. linked to it,
and commits, which releases the lock. The primary key on ``id`` backs this up.

Durability: the writer's session sets ``synchronous_commit=on``, so ``append``
returns only once the commit is flushed to the server's WAL on disk.

Throughput: one writer thread per store commits everything queued (up to
``BATCH_MAX``) in one transaction (group commit), as the SQLite store does.

Outages (a restart or failover): appends that cannot be committed stay queued,
in order, and the writer retries with backoff (50 ms doubling to 2 s) until the
server is back. Nothing is acknowledged before it is committed; a caller simply
waits, so fire-and-forget writers (``FrontContext.audit_soon``) never block a
relay, and a caller that must not wait long uses ``append_within``. Memory is
bounded: at most ``max_buffer_bytes`` (32 MiB by default, about 50,000 typical
events) wait at once; beyond that ``append`` fails at once with
``StorageError``, and the event is not recorded. A commit cut off mid-way is
in doubt: before retrying, the writer looks for that batch's ids and hashes in
the table, so a batch is never written twice.

Anchoring: with a ``CheckpointSigner``, each commit also stores its new head's
signed checkpoint in the same transaction (``gateway.domain.audit.checkpoint``);
verification reads events and checkpoints in one REPEATABLE READ snapshot.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import psycopg
import structlog

from gateway.adapters.audit.delivery import deliver, link_batch, to_event
from gateway.adapters.audit.pgconn import connect, conninfo_of, error_line, schema_state, transient
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

T = TypeVar("T")
log = structlog.get_logger("gpuhop.audit")

BATCH_MAX: Final = 512  # events per transaction: bounds one commit's latency and memory
CHAIN_LOCK: Final = 0x6770_6875_7000_0001  # pg_advisory_xact_lock key for appends
VERIFY_FETCH: Final = 20_000  # rows per round trip when walking the chain
_EVENT_OVERHEAD: Final = 400  # bytes a queued event costs beyond its text
_SELECT: Final = "SELECT id, ts, kind, actor, data, prev_hash, hash FROM audit_events"
_SELECT_ALL: Final = _SELECT + " ORDER BY id"
_LIST: Final = {
    (False, False): _SELECT + " WHERE id > %s ORDER BY id LIMIT %s",
    (True, False): _SELECT + " WHERE kind = %s AND id > %s ORDER BY id LIMIT %s",
    (False, True): _SELECT + " WHERE actor = %s AND id > %s ORDER BY id LIMIT %s",
    (True, True): _SELECT + " WHERE kind = %s AND actor = %s AND id > %s ORDER BY id LIMIT %s",
}
_INSERT: Final = (
    "INSERT INTO audit_events(id, ts, kind, actor, data, prev_hash, hash)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
_HEAD: Final = "SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1"
_RANGE: Final = "SELECT id, hash FROM audit_events WHERE id BETWEEN %s AND %s ORDER BY id"
_INSERT_CHECKPOINT: Final = (
    "INSERT INTO audit_checkpoints(event_id, hash, ts, key_id, signature)"
    " VALUES (%s, %s, %s, %s, %s)"
)
_SELECT_CHECKPOINTS: Final = (
    "SELECT event_id, hash, ts, key_id, signature FROM audit_checkpoints ORDER BY event_id"
)


@dataclass(slots=True, eq=False)
class _Pending:
    kind: str
    actor: str
    data_text: str
    data: Mapping[str, object]
    future: asyncio.Future[AuditEvent]
    size: int
    abandoned: bool = False  # the caller stopped waiting; drop it if not yet sent


@dataclass(slots=True)
class _Attempt:
    """A batch whose COMMIT was sent but not confirmed."""

    batch: builtins.list[_Pending]
    events: builtins.list[AuditEvent]
    checkpoint: Checkpoint | None = None


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"audit {what} must be str")
    if "\x00" in value:
        raise ValueError(f"audit {what} must not contain NUL (PostgreSQL text cannot hold it)")
    value.encode("utf-8")  # lone surrogates have no UTF-8 form
    return value


def verify_connection(
    conn: psycopg.Connection[Any], anchors: Anchors | None = None
) -> VerifyResult:
    """Walk the chain through a server-side cursor: one snapshot, bounded memory.

    With ``anchors``, the checkpoints come through a second cursor in the same
    REPEATABLE READ snapshot, so a commit in between cannot look like tampering.
    """
    if anchors is None:
        with conn.transaction(), conn.cursor(name="gpuhop_audit_verify") as cur:
            cur.itersize = VERIFY_FETCH
            cur.execute(_SELECT_ALL)
            return verify_rows(cur)
    from gateway.adapters.audit.anchor import checkpoint_rows

    previous = conn.isolation_level
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with (
            conn.transaction(),
            conn.cursor(name="gpuhop_audit_verify") as cur,
            conn.cursor(name="gpuhop_audit_checkpoints") as cps,
        ):
            cur.itersize = VERIFY_FETCH
            cps.itersize = VERIFY_FETCH
            cur.execute(_SELECT_ALL)
            cps.execute(_SELECT_CHECKPOINTS)
            return verify_anchored(cur, checkpoint_rows(cps), anchors)
    finally:
        conn.isolation_level = previous


def verify_url(url: str, anchors: Anchors | None = None) -> VerifyResult:
    """Verify the chain in a PostgreSQL database (read-only: migrates nothing)."""
    info, label = conninfo_of(url)
    try:
        with connect(info, label, "gpuhop-audit-verify", autocommit=True) as conn:
            conn.read_only = True
            state = schema_state(conn)
            if state != "ready":
                raise StorageError(f"{label}: not a gpuhop audit database ({state})")
            return verify_connection(conn, anchors)
    except psycopg.Error as exc:
        raise StorageError(error_line(label, "verify", exc)) from None


class PostgresAuditStore:
    """``AuditStore`` on PostgreSQL; open at start-up (this connects and checks the schema).

    The schema itself comes from the migrations (``open_store`` runs them first).
    """

    def __init__(
        self,
        url: str,
        *,
        max_buffer_bytes: int = 32 * 2**20,
        retry_max_s: float = 2.0,
        close_timeout_s: float = 30.0,
        read_pool: int = 4,
        signer: CheckpointSigner | None = None,
    ) -> None:
        self._info, self.label = conninfo_of(url)
        self.signer = signer
        self.last_checkpoint: Checkpoint | None = None  # the newest this store committed
        self.max_buffer_bytes = max_buffer_bytes
        self.retry_max_s = retry_max_s
        self.close_timeout_s = close_timeout_s
        self.commits = 0  # transactions committed by this store (group-commit metric)
        self.outages = 0  # times the writer lost the server and buffered
        self.available = True  # False while the writer cannot reach the server
        self._conn: psycopg.Connection[Any] | None = self._open_writer()
        self._cond = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._buffered = 0  # bytes queued (estimate)
        self._closing = False
        self._close_deadline = 0.0
        self._doubt: _Attempt | None = None
        self._in_flight = 0  # events in the batch being committed (writer thread)
        self._idle: builtins.list[psycopg.Connection[Any]] = []
        self._idle_max = read_pool
        self._idle_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"audit-writer:{self.label}", daemon=True
        )
        self._thread.start()

    @property
    def pending(self) -> int:
        """Events accepted but not yet committed or failed: queued, plus the batch in flight."""
        with self._cond:
            return len(self._queue) + self._in_flight

    async def append(self, kind: str, actor: str, data: Mapping[str, object]) -> AuditEvent:
        _check_text(kind, "kind")
        _check_text(actor, "actor")
        data_text, frozen = freeze_data(data)
        future: asyncio.Future[AuditEvent] = asyncio.get_running_loop().create_future()
        size = len(data_text) + len(kind) + len(actor) + _EVENT_OVERHEAD
        pending = _Pending(kind, actor, data_text, frozen, future, size)
        with self._cond:
            if self._closing or not self._thread.is_alive():
                raise StorageError(f"{self.label}: audit store is closed")
            if self._buffered + size > self.max_buffer_bytes and self._queue:
                raise StorageError(
                    f"{self.label}: audit buffer full ({len(self._queue)} events waiting for "
                    "the database); event not recorded"
                )
            self._queue.append(pending)
            self._buffered += size
            self._cond.notify()
        try:
            return await future
        except asyncio.CancelledError:
            pending.abandoned = True
            raise

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
        sql = _LIST[kind is not None, actor is not None]
        args = [v for v in (kind, actor) if v is not None] + [after_id, limit]

        def run(conn: psycopg.Connection[Any]) -> builtins.list[AuditEvent]:
            rows = conn.execute(sql, args).fetchall()
            return [to_event(row) for row in rows]

        try:
            return await asyncio.to_thread(self._read, "list", run)
        except ValueError as exc:
            raise StorageError(f"{self.label}: an audit event's data is not JSON ({exc})") from None

    async def verify(self) -> VerifyResult:
        signer = self.signer
        if signer is None:
            return await asyncio.to_thread(self._read, "verify", verify_connection)
        from gateway.adapters.audit.anchor import anchors_for

        def run(conn: psycopg.Connection[Any]) -> VerifyResult:
            return verify_connection(conn, anchors_for(signer.trusted(), signer.anchor_file))

        return await asyncio.to_thread(self._read, "verify", run)

    async def close(self) -> None:
        """Commit everything already queued (waiting up to ``close_timeout_s`` for the
        server), then stop the writer; events still waiting then fail, unacknowledged."""
        with self._cond:
            if not self._closing:
                self._closing = True
                self._close_deadline = time.monotonic() + self.close_timeout_s
                self._cond.notify_all()
        await asyncio.to_thread(self._thread.join)
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if self.last_checkpoint is not None:
            log.info(
                "audit head",
                database=self.label,
                head=f"{self.last_checkpoint.event_id}:{self.last_checkpoint.hash}",
                key_id=self.last_checkpoint.key_id,
            )

    # -- reads: pooled connections, on worker threads ---------------------------

    def _read(self, what: str, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        with self._idle_lock:
            conn = self._idle.pop() if self._idle else None
        healthy = False
        try:
            if conn is None or conn.closed:
                conn = connect(self._info, self.label, "gpuhop-audit-read", autocommit=True)
            result = fn(conn)
            healthy = True
            return result
        except psycopg.Error as exc:
            raise StorageError(error_line(self.label, what, exc)) from None
        finally:
            if conn is not None:
                self._release(conn, healthy)

    def _release(self, conn: psycopg.Connection[Any], healthy: bool) -> None:
        with self._idle_lock:
            if healthy and not self._closing and len(self._idle) < self._idle_max:
                self._idle.append(conn)
                return
        conn.close()

    # -- the writer thread --------------------------------------------------------

    def _open_writer(self) -> psycopg.Connection[Any]:
        try:
            conn = connect(self._info, self.label, "gpuhop-audit-writer")
        except psycopg.Error as exc:
            raise StorageError(error_line(self.label, "open", exc)) from None
        try:
            state = schema_state(conn)
            conn.rollback()
        except psycopg.Error as exc:
            conn.close()
            raise StorageError(error_line(self.label, "open", exc)) from None
        except BaseException:
            conn.close()
            raise
        if state != "ready":
            conn.close()
            raise StorageError(f"{self.label}: not a gpuhop audit database ({state})")
        return conn

    def _take(self) -> builtins.list[_Pending]:
        """The next batch, oldest first; empty once closing and drained."""
        with self._cond:
            while True:
                while self._queue and self._queue[0].abandoned:
                    self._buffered -= self._queue.popleft().size
                if self._queue:
                    break
                if self._closing:
                    return []
                self._cond.wait()
            batch: builtins.list[_Pending] = []
            while self._queue and len(batch) < BATCH_MAX:
                item = self._queue.popleft()
                self._buffered -= item.size
                if not item.abandoned:
                    batch.append(item)
            self._in_flight = len(batch)
            return batch

    def _run(self) -> None:
        try:
            while batch := self._take():
                self._commit(batch)
                with self._cond:
                    self._in_flight = 0
        finally:
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None

    def _commit(self, batch: builtins.list[_Pending]) -> None:
        """Commit one batch, retrying through outages; never acknowledge what did not commit."""
        delay = 0.05
        down_since: float | None = None
        while True:
            if self._doubt is None:
                batch = [p for p in batch if not p.abandoned]
                if not batch:
                    return
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self._info, self.label, "gpuhop-audit-writer")
                events, checkpoint = self._attempt(self._conn, batch)
            except Exception as exc:
                self._drop_connection(exc)
                if not transient(exc):
                    self._doubt = None
                    self._fail(batch, StorageError(error_line(self.label, "append", exc)))
                    return
                if down_since is None:
                    down_since = time.monotonic()
                    self._went_down(exc)
                if self._closing and time.monotonic() >= self._close_deadline:
                    self._doubt = None
                    self._fail_all(batch, "the database did not come back before close")
                    return
                with self._cond:  # a close() wakes the wait
                    self._cond.wait(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.retry_max_s)
                continue
            if events:
                self.commits += 1
            if checkpoint is not None and self.signer is not None:
                self.last_checkpoint = checkpoint
                self.signer.committed(checkpoint)
            if down_since is not None:
                self._came_back(time.monotonic() - down_since)
            for pending, event in zip(batch, events, strict=True):
                deliver(pending.future, event)
            return

    def _attempt(
        self, conn: psycopg.Connection[Any], batch: builtins.list[_Pending]
    ) -> tuple[builtins.list[AuditEvent], Checkpoint | None]:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK,))
            doubt = self._doubt
            if doubt is not None:
                first, last = doubt.events[0].id, doubt.events[-1].id
                found = cur.execute(_RANGE, (first, last)).fetchall()
                if found == [(e.id, e.hash) for e in doubt.events]:
                    conn.rollback()  # that COMMIT did land: acknowledge it now
                    self._doubt = None
                    batch[:] = doubt.batch
                    return doubt.events, doubt.checkpoint
                self._doubt = None  # it did not: start over with whoever still waits
                batch[:] = [p for p in doubt.batch if not p.abandoned]
                if not batch:
                    conn.rollback()
                    return [], None
            head = cur.execute(_HEAD).fetchone()
            # commit time, taken under the chain lock
            linked = link_batch(head, time.time(), batch, self.signer)
            cur.executemany(_INSERT, linked.rows)
            if linked.checkpoint_row is not None:
                cur.execute(_INSERT_CHECKPOINT, linked.checkpoint_row)
        self._doubt = _Attempt(list(batch), linked.events, linked.checkpoint)
        conn.commit()
        self._doubt = None
        return linked.events, linked.checkpoint

    def _drop_connection(self, exc: Exception) -> None:
        conn = self._conn
        if conn is None:
            return
        if not conn.closed and not transient(exc):
            try:
                conn.rollback()
                return
            except psycopg.Error:
                pass
        with contextlib.suppress(psycopg.Error):
            conn.close()
        self._conn = None

    def _went_down(self, exc: Exception) -> None:
        self.available = False
        self.outages += 1
        log.warning(
            "audit database unavailable; buffering events",
            database=self.label,
            error=error_line(self.label, "append", exc),
            waiting=self.pending,
        )

    def _came_back(self, down_s: float) -> None:
        self.available = True
        log.info("audit database back", database=self.label, down_s=round(down_s, 2))

    def _fail(self, batch: builtins.list[_Pending], error: StorageError) -> None:
        for pending in batch:
            deliver(pending.future, StorageError(str(error)))

    def _fail_all(self, batch: builtins.list[_Pending], why: str) -> None:
        with self._cond:
            rest = list(self._queue)
            self._queue.clear()
            self._buffered = 0
        lost = [*batch, *rest]
        log.error("audit events not recorded", database=self.label, count=len(lost), reason=why)
        self._fail(lost, StorageError(f"{self.label}: audit event not recorded: {why}"))
