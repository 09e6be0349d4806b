"""Session records: one row per brokered session, written at start and at end.

The audit log says what happened, in order, tamper-evidently; this table is
the queryable summary of each session (who, where, how long, how many bytes,
what it cost) that the API lists and metering totals. A record with no
``ended_at`` is live, or was cut off by a gateway that died before it could
write the end: ``node`` names the gateway that brokered it, and that node
closes such records when it starts again (``gateway.services.reconcile``).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.adapters.storage.engine import Database
from gateway.adapters.storage.replicas import ReplicaStore
from gateway.adapters.storage.schema import session_records as t
from gateway.domain.models import Mode
from gateway.errors import StorageError


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    user: str
    host: str
    region: str
    mode: Mode
    account: str
    source: str
    started_at: float
    ended_at: float | None = None
    bytes_up: int = 0  # user -> host
    bytes_down: int = 0  # host -> user
    exit_status: int | None = None
    error: str | None = None
    gpus: int = 0
    cost_usd: float | None = None
    node: str = ""  # the gateway node that brokered it ("" before nodes were recorded)
    replica: str = ""  # the gateway process that brokered it ("" before revision 0006)

    @property
    def live(self) -> bool:
        return self.ended_at is None


def _record(row: Any) -> SessionRecord:
    return SessionRecord(
        id=row.id,
        user=row.user,
        host=row.host,
        region=row.region,
        mode=Mode(row.mode),
        account=row.account,
        source=row.source,
        started_at=row.started_at,
        ended_at=row.ended_at,
        bytes_up=row.bytes_up,
        bytes_down=row.bytes_down,
        exit_status=row.exit_status,
        error=row.error,
        gpus=row.gpus,
        cost_usd=row.cost_usd,
        node=row.node,
        replica=row.replica,
    )


def _select_one(conn: Connection, session_id: str) -> Any:
    return conn.execute(sa.select(t).where(t.c.id == session_id)).first()


class SessionStore:
    """Records in the ``session_records`` table."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], float] = time.time,
        node: str = "",
        replicas: ReplicaStore | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self.node = node  # stamped on the records this store starts
        self._replicas = replicas  # and, once registered, this process's replica id

    async def record_start(
        self,
        *,
        session_id: str,
        user: str,
        host: str,
        region: str,
        mode: Mode,
        account: str = "",
        source: str = "",
        gpus: int = 0,
        started_at: float | None = None,
    ) -> SessionRecord:
        """Write the start of a session; ``StorageError`` if the id is already recorded.

        >>> import asyncio
        >>> from gateway.adapters.storage import open_storage
        >>> async def main() -> tuple[bool, bool]:
        ...     storage = await open_storage("memory://")
        ...     s = storage.sessions
        ...     await s.record_start(session_id="s1", user="alice", host="sg-1", region="sg",
        ...                          mode=Mode.PASSTHROUGH)
        ...     live = (await s.get("s1")).live
        ...     end = await s.record_end("s1", bytes_up=10, bytes_down=20, exit_status=0)
        ...     await storage.close()
        ...     return live, end.live
        >>> asyncio.run(main())
        (True, False)
        """
        record = SessionRecord(
            id=session_id,
            user=user,
            host=host,
            region=region,
            mode=Mode(mode),
            account=account,
            source=source,
            started_at=self._clock() if started_at is None else started_at,
            gpus=gpus,
            node=self.node,
            replica="" if self._replicas is None else self._replicas.owner,
        )
        row = {f: getattr(record, f) for f in _FIELDS}
        row["mode"] = record.mode.value
        await self._db.write(lambda conn: conn.execute(t.insert().values(**row)))
        return record

    async def record_end(
        self,
        session_id: str,
        *,
        bytes_up: int,
        bytes_down: int,
        exit_status: int | None = None,
        error: str | None = None,
        cost_usd: float | None = None,
        ended_at: float | None = None,
    ) -> SessionRecord:
        """Write the end of a live session and return the final record.

        Ending twice keeps the first end (and returns it); ending a session that
        was never started is a ``StorageError``.
        """
        values = {
            "ended_at": self._clock() if ended_at is None else ended_at,
            "bytes_up": bytes_up,
            "bytes_down": bytes_down,
            "exit_status": exit_status,
            "error": error or None,
            "cost_usd": cost_usd,
        }

        def run(conn: Connection) -> Any:
            conn.execute(
                t.update().where(t.c.id == session_id, t.c.ended_at.is_(None)).values(**values)
            )
            return _select_one(conn, session_id)

        row = await self._db.write(run)
        if row is None:
            raise StorageError(f"no session record {session_id!r} to end")
        return _record(row)

    async def get(self, session_id: str) -> SessionRecord | None:
        row = await self._db.read(lambda conn: _select_one(conn, session_id))
        return None if row is None else _record(row)

    async def list(
        self,
        *,
        user: str | None = None,
        live: bool | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> builtins.list[SessionRecord]:
        """Newest first, at most ``limit``; ``after`` is the last id of the previous page.

        ``live=True`` keeps only sessions with no end yet, ``False`` only ended ones.
        An ``after`` id that does not exist gives an empty page.
        """
        if limit < 0:
            raise ValueError("limit must be >= 0")

        def run(conn: Connection) -> builtins.list[Any]:
            query = sa.select(t).order_by(t.c.started_at.desc(), t.c.id.desc()).limit(limit)
            if user is not None:
                query = query.where(t.c.user == user)
            if live is not None:
                query = query.where(t.c.ended_at.is_(None) if live else t.c.ended_at.isnot(None))
            if after is not None:
                mark = conn.execute(sa.select(t.c.started_at).where(t.c.id == after)).scalar()
                if mark is None:
                    return []
                query = query.where(
                    sa.or_(t.c.started_at < mark, sa.and_(t.c.started_at == mark, t.c.id < after))
                )
            return list(conn.execute(query).all())

        return [_record(r) for r in await self._db.read(run)]


_FIELDS = tuple(SessionRecord.__dataclass_fields__)
