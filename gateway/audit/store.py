"""The audit storage port: one Protocol, opened from a URL.

``open_store`` understands:

- ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (the path is
  everything after ``sqlite:///``, as in SQLAlchemy), or a plain file path;
- ``postgresql+psycopg://user:password@host:port/db`` (or ``postgresql://``) for
  ``PostgresAuditStore``, shared by several gateway replicas;
- ``memory://`` for ``MemoryAuditStore``, the in-package fake for unit tests.

Anything else is a ``ConfigError``. Opening a SQLite or PostgreSQL store first
brings the database's schema up by the migration rules (``gateway.storage.migrate``):
an empty database is set up, an outdated one is refused with ``SchemaBehind``.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from gateway.audit.chain import AuditEvent, VerifyResult
from gateway.audit.memory import MemoryAuditStore
from gateway.audit.sqlite import SQLiteAuditStore, verify_file
from gateway.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from gateway.audit.anchor import CheckpointSigner
    from gateway.audit.checkpoint import Anchors

_EXPECTED = "expected sqlite:///PATH, postgresql+psycopg://..., memory:// or a file path"
_POSTGRES = ("postgresql", "postgresql+psycopg", "postgres", "postgres+psycopg")


class AuditStore(Protocol):
    """Append-only, hash-chained audit events."""

    async def append(self, kind: str, actor: str, data: Mapping[str, object]) -> AuditEvent:
        """Add one event and return it once it is durably committed.

        Acknowledged means durable: when this returns, the event survives a crash.
        If it raises ``StorageError``, the event was not committed. ``data`` must
        be JSON with string keys (``ValueError`` otherwise). An append that is
        cancelled may or may not have been committed.

        >>> import asyncio
        >>> async def main() -> tuple[int, bool]:
        ...     store = open_store("memory://")
        ...     event = await store.append("session.open", "alice", {"host": "sg-1"})
        ...     await store.close()
        ...     return event.id, event.prev_hash == "0" * 64
        >>> asyncio.run(main())
        (1, True)
        """
        ...

    async def list(
        self,
        *,
        kind: str | None = None,
        actor: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> builtins.list[AuditEvent]:
        """Events with id > ``after_id``, oldest first, at most ``limit``; page with the last id.

        >>> import asyncio
        >>> async def main() -> list[int]:
        ...     store = open_store("memory://")
        ...     for who in ("alice", "bob", "alice"):
        ...         await store.append("session.open", who, {})
        ...     page = await store.list(actor="alice", after_id=1, limit=10)
        ...     await store.close()
        ...     return [e.id for e in page]
        >>> asyncio.run(main())
        [3]
        """
        ...

    async def verify(self) -> VerifyResult:
        """Walk the whole chain and report the first broken link, if any.

        >>> import asyncio
        >>> async def main() -> tuple[bool, int]:
        ...     store = open_store("memory://")
        ...     await store.append("policy.deny", "bob", {"reason": "no role for sg-1"})
        ...     result = await store.verify()
        ...     await store.close()
        ...     return result.ok, result.count
        >>> asyncio.run(main())
        (True, 1)
        """
        ...

    async def close(self) -> None:
        """Commit what is already queued, then release the store; later appends fail.

        >>> import asyncio
        >>> async def main() -> str:
        ...     store = open_store("memory://")
        ...     await store.close()
        ...     try:
        ...         await store.append("x", "y", {})
        ...     except Exception as exc:
        ...         return type(exc).__name__
        ...     return "appended"
        >>> asyncio.run(main())
        'StorageError'
        """
        ...


def _is_postgres(url: str) -> bool:
    return "://" in url and url.split("://", 1)[0].strip().lower() in _POSTGRES


def _sqlite_path(url: str) -> str | None:
    """The SQLite file a URL names, or None for ``memory://``; ``ConfigError`` otherwise."""
    if not url.strip():
        raise ConfigError(f"audit store URL is empty ({_EXPECTED})")
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "memory":
        if rest:
            raise ConfigError(f"audit store URL memory:// takes no path ({_EXPECTED})")
        return None
    if scheme != "sqlite":
        raise ConfigError(f"unsupported audit store URL scheme {scheme!r} ({_EXPECTED})")
    if not rest.startswith("/") or rest == "/":
        raise ConfigError(f"audit store URL {url!r} has no file path ({_EXPECTED})")
    path = rest[1:]
    if path == ":memory:":
        raise ConfigError("use memory:// for an in-memory audit store, not sqlite:///:memory:")
    return path


def open_store(url: str, signer: CheckpointSigner | None = None) -> AuditStore:
    """Open the audit store a URL names; call it at start-up (it opens the file).

    With ``signer`` every commit also stores a signed checkpoint of the new head
    (``gateway.audit.checkpoint``); whatever appends for a gateway passes one
    (``gateway.audit.anchor.signer_for``), or ``audit verify`` reports its events
    as forged. Raises ``ConfigError`` for a URL it does not understand and
    ``StorageError`` when the database cannot be opened or created.
    """
    from gateway.storage.migrate import ensure_url

    if _is_postgres(url):
        from gateway.audit.postgres import PostgresAuditStore

        ensure_url(url)
        return PostgresAuditStore(url, signer=signer)
    path = _sqlite_path(url)
    if path is None:
        return MemoryAuditStore()
    ensure_url(path)  # the exact file the store opens, whatever the URL's query says
    return SQLiteAuditStore(path, signer=signer)


def verify_database(url: str, anchors: Anchors | None = None) -> VerifyResult:
    """Verify a store's chain from the CLI, without starting a gateway (opens read-only).

    With ``anchors``, also against its signed checkpoints, the anchor file and an
    expected head. A missing file, or one that is not a gpuhop audit database,
    raises ``StorageError``.
    """
    if _is_postgres(url):
        from gateway.audit.postgres import verify_url

        return verify_url(url, anchors)
    path = _sqlite_path(url)
    if path is None:
        raise ConfigError("memory:// holds no events to verify")
    return verify_file(path, anchors=anchors)


async def append_within(
    store: AuditStore, kind: str, actor: str, data: Mapping[str, object], timeout_s: float
) -> AuditEvent:
    """``append``, but give up after ``timeout_s`` with ``StorageError`` (fail closed).

    For events a user is waiting on (a session start) while the database may be
    down: the event is withdrawn if it has not been sent yet, so a refused
    session normally leaves no start event; one already being committed when
    the time ran out may still land (as for any cancelled append).
    """
    try:
        return await asyncio.wait_for(store.append(kind, actor, data), timeout_s)
    except TimeoutError:
        raise StorageError(
            f"audit log unavailable: {kind} not committed within {timeout_s:g} s"
        ) from None
