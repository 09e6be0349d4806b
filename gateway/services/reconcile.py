"""Crash reconciliation: session records a dead gateway left open are closed, costed, audited.

A gateway killed with ``kill -9`` (or by the OOM killer, or a power cut) writes
no ``session.end``; its sessions' records would stay ``live`` for ever, and
their cost would never count against budgets. On start, before it listens,
the gateway closes the records it owns:

- which records: ``owned`` decides. The start-up hook takes those of this node
  (``node_name``, the host name by default; records from before nodes were
  recorded too): its sessions all died with the process it replaces, and
  other replicas' live sessions are left alone. Replica heartbeats pass a
  predicate for the records of a replica whose heartbeat stopped
  (``gateway.replication``, error ``REPLICA_LOST``).
- when they ended: ``last_seen(record)``, the last sign of life known for the
  session (never before its start). The start-up hook uses the newest of the
  last audit event and the session's recording file; that is a lower bound, so
  a session is never charged for time the gateway was down.
- what they cost: GPU time from start to that end at the host's rate (bytes
  moved are unknown after a crash and are recorded as 0).
- each one is audited first (``session.end`` with ``reconciled: true``), then
  its record closed; if the audit log is unavailable the start fails (closed).
"""

from __future__ import annotations

import builtins
import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa
import structlog

from gateway.adapters.storage import Storage
from gateway.adapters.storage.sessions import SessionRecord, SessionStore
from gateway.domain.metering.meter import Rate, session_cost
from gateway.domain.sessionevents import SessionEnd, SessionStart
from gateway.ports import AuditStore, append_within

if TYPE_CHECKING:
    from gateway.config.loader import Settings
    from gateway.config.process import GatewaySettings

log = structlog.get_logger("gpuhop.audit")

CRASH_ERROR: Final = "gateway stopped before the session ended (crash or kill); closed at restart"
REPLICA_LOST: Final = (
    "replica lost: the gateway running it stopped its heartbeat; closed by another"
)
PAGE: Final = 500  # open records read at a time
MAX_RECORDS: Final = 100_000  # open records closed in one start, at most


def _all(_record: SessionRecord) -> bool:
    return True


def node_name(g: GatewaySettings) -> str:
    """This node's name on session records: ``node_name`` or the machine's host name."""
    return g.node_name or socket.gethostname()


def of_node(node: str) -> Callable[[SessionRecord], bool]:
    """Records this node brokered (and unattributed ones, from before nodes were recorded)."""
    return lambda record: record.node in (node, "")


async def close_orphans(
    sessions: SessionStore,
    audit: AuditStore,
    *,
    rate_of: Callable[[str], Rate | None],
    last_seen: Callable[[SessionRecord], float],
    owned: Callable[[SessionRecord], bool] = _all,
    audit_timeout_s: float = 10.0,
    limit: int = MAX_RECORDS,
    error: str = CRASH_ERROR,
) -> builtins.list[SessionRecord]:
    """Close every open record ``owned`` selects (at most ``limit``); return the closed ones.

    ``rate_of(host)`` is the host's rate (None: the host is gone, cost unknown).
    Raises ``StorageError`` if an end cannot be audited: that record stays open.
    """
    closed: builtins.list[SessionRecord] = []
    after: str | None = None
    seen = 0
    while seen < limit:
        page = await sessions.list(live=True, limit=min(PAGE, limit - seen), after=after)
        if not page:
            break
        seen += len(page)
        after = page[-1].id
        for record in page:
            if owned(record):
                closed.append(
                    await _close(
                        sessions, audit, record, rate_of, last_seen, audit_timeout_s, error
                    )
                )
        if len(page) < PAGE:
            break
    if seen >= limit:
        log.warning("more open session records than one start closes", limit=limit)
    return closed


async def _close(
    sessions: SessionStore,
    audit: AuditStore,
    record: SessionRecord,
    rate_of: Callable[[str], Rate | None],
    last_seen: Callable[[SessionRecord], float],
    audit_timeout_s: float,
    error: str,
) -> SessionRecord:
    ended_at = max(record.started_at, last_seen(record))
    duration = ended_at - record.started_at
    rate = rate_of(record.host)
    cost = None if rate is None else round(session_cost(rate, record.gpus, duration).total, 6)
    start = SessionStart(
        record.id,
        record.user,
        record.host,
        record.region,
        record.mode,
        source=record.source,
        account=record.account,
        gpus=record.gpus,
    )
    end = SessionEnd(
        start,
        duration_s=duration,
        error=error,
        cost_usd=cost,
        ended_at=ended_at,
        details={"reconciled": True},
    )
    await append_within(audit, end.event, end.user, end.audit_data(), audit_timeout_s)
    final = await sessions.record_end(
        record.id,
        bytes_up=end.bytes_up,
        bytes_down=end.bytes_down,
        error=end.error,
        cost_usd=end.cost_usd,
        ended_at=end.ended_at,
    )
    log.warning(
        "session closed after a gateway crash",
        session=record.id,
        user=record.user,
        host=record.host,
        cost_usd=cost,
    )
    return final


async def last_audit_time(storage: Storage) -> float | None:
    """When the newest audit event was committed (the log shares the storage database)."""

    def run(conn: sa.Connection) -> float | None:
        if "audit_events" not in sa.inspect(conn).get_table_names():
            return None
        value = conn.execute(sa.text("SELECT max(ts) FROM audit_events")).scalar()
        return None if value is None else float(value)

    return await storage.db.read(run)


def sign_of_life(audit_ts: float | None, recordings_dir: Path) -> Callable[[SessionRecord], float]:
    """``last_seen`` for a single gateway: the newest of its last audit event and the
    session's recording file (written as output arrives); the start if neither is newer."""

    def last_seen(record: SessionRecord) -> float:
        seen = max(record.started_at, audit_ts or 0.0)
        with contextlib.suppress(OSError, ValueError):
            seen = max(seen, (recordings_dir / f"{record.id}.cast").stat().st_mtime)
        return min(seen, time.time())

    return last_seen


async def reconcile_at_start(
    storage: Storage,
    audit: AuditStore,
    *,
    rate_of: Callable[[str], Rate | None],
    recordings_dir: Path,
    owned: Callable[[SessionRecord], bool],
    audit_timeout_s: float = 10.0,
) -> builtins.list[SessionRecord]:
    """The start-up hook: close the open records ``owned`` selects (``of_node(name)``),
    ended at their last sign of life. Call it before the gateway accepts sessions."""
    last_seen = sign_of_life(await last_audit_time(storage), recordings_dir)
    return await close_orphans(
        storage.sessions,
        audit,
        rate_of=rate_of,
        last_seen=last_seen,
        owned=owned,
        audit_timeout_s=audit_timeout_s,
    )


def reconcile_before_workers(settings: Settings) -> int:
    """For a supervisor: reconcile once, before it starts the worker processes (which
    then skip it: a restarted worker must not close its siblings' live sessions).
    Rates come from the config's hosts and catalog. Returns how many were closed."""
    import asyncio

    from gateway.adapters.audit.anchor import signer_for
    from gateway.adapters.audit.store import open_store
    from gateway.adapters.storage import open_storage
    from gateway.domain.inventory.catalog import load_catalog
    from gateway.domain.metering.meter import rate_for

    g = settings.gateway
    catalog = load_catalog(g.catalog) if g.catalog is not None else None
    rates = {h.name: rate_for(h, catalog) for h in settings.inventory().hosts}

    async def main() -> int:
        url = g.storage_url.get_secret_value()
        audit = open_store(url, signer_for(g))
        try:
            storage = await open_storage(url)
            try:
                closed = await reconcile_at_start(
                    storage,
                    audit,
                    rate_of=rates.get,
                    recordings_dir=g.recordings_dir,
                    owned=of_node(node_name(g)),
                    audit_timeout_s=g.audit_start_timeout_s,
                )
                return len(closed)
            finally:
                await storage.close()
        finally:
            await audit.close()

    return asyncio.run(main())
