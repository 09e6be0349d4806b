"""Opening the audit storage port (``gateway.ports.AuditStore``) from a URL.

``open_store`` understands:

- ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (the path is
  everything after ``sqlite:///``, as in SQLAlchemy), or a plain file path;
- ``postgresql+psycopg://user:password@host:port/db`` (or ``postgresql://``) for
  ``PostgresAuditStore``, shared by several gateway replicas;
- ``memory://`` for ``MemoryAuditStore``, the in-package fake for unit tests.

Anything else is a ``ConfigError``. Opening a SQLite or PostgreSQL store first
brings the database's schema up by the migration rules (``gateway.adapters.storage.migrate``):
an empty database is set up, an outdated one is refused with ``SchemaBehind``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.adapters.audit.memory import MemoryAuditStore
from gateway.adapters.audit.sqlite import SQLiteAuditStore, verify_file
from gateway.domain.audit.chain import VerifyResult
from gateway.errors import ConfigError
from gateway.ports import AuditStore

if TYPE_CHECKING:
    from gateway.adapters.audit.anchor import CheckpointSigner
    from gateway.domain.audit.checkpoint import Anchors

_EXPECTED = "expected sqlite:///PATH, postgresql+psycopg://..., memory:// or a file path"
_POSTGRES = ("postgresql", "postgresql+psycopg", "postgres", "postgres+psycopg")


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
    (``gateway.domain.audit.checkpoint``); whatever appends for a gateway passes one
    (``gateway.adapters.audit.anchor.signer_for``), or ``audit verify`` reports its events
    as forged. Raises ``ConfigError`` for a URL it does not understand and
    ``StorageError`` when the database cannot be opened or created.
    """
    from gateway.adapters.storage.migrate import ensure_url

    if _is_postgres(url):
        from gateway.adapters.audit.postgres import PostgresAuditStore

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
        from gateway.adapters.audit.postgres import verify_url

        return verify_url(url, anchors)
    path = _sqlite_path(url)
    if path is None:
        raise ConfigError("memory:// holds no events to verify")
    return verify_file(path, anchors=anchors)
