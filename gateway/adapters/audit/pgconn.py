"""Connecting the audit log to PostgreSQL: URLs, sessions, schema check, error lines.

Third-party errors stay psycopg's here; callers turn them into ``StorageError``
with ``error_line`` (one line, never the password).
"""

from __future__ import annotations

from typing import Any, Final

import psycopg
from psycopg.conninfo import make_conninfo

from gateway.adapters.storage.engine import parse_storage_url
from gateway.errors import ConfigError

CONNECT_TIMEOUT_S: Final = 5
SCHEMA_VERSION: Final = "1"  # meta.schema_version the audit queries are written for


def conninfo_of(url: str) -> tuple[str, str]:
    """``(libpq conninfo, label without password)`` for a PostgreSQL storage URL."""
    parsed = parse_storage_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError("not a PostgreSQL URL")
    params: dict[str, Any] = {}
    for key, query_value in parsed.query.items():
        params[key] = query_value if isinstance(query_value, str) else query_value[-1]
    parts: dict[str, object] = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": parsed.database,
    }
    params.update({k: v for k, v in parts.items() if v is not None})
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    # Keepalives: a server that vanished without a FIN is noticed in about 20 s.
    params.setdefault("keepalives", 1)
    params.setdefault("keepalives_idle", 10)
    params.setdefault("keepalives_interval", 5)
    params.setdefault("keepalives_count", 2)
    label = parsed.set(drivername="postgresql").render_as_string(hide_password=True)
    return make_conninfo(**params), label


def connect(
    info: str, label: str, application: str, *, autocommit: bool = False
) -> psycopg.Connection[Any]:
    """A session with ``synchronous_commit=on``: a returned COMMIT is on the server's disk."""
    conn = psycopg.connect(info, autocommit=autocommit, application_name=application)
    try:
        conn.execute("SET synchronous_commit TO on")
        if not autocommit:
            conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn


def schema_state(conn: psycopg.Connection[Any]) -> str:
    """``"ready"``, or why the audit tables cannot be used (migrations not run, wrong version)."""
    row = conn.execute("SELECT to_regclass('audit_events'), to_regclass('meta')").fetchone()
    if row is None or row[0] is None or row[1] is None:
        return "no audit tables; the schema is created by the migrations"
    found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = None if found is None else found[0]
    if version != SCHEMA_VERSION:
        return f"audit schema version {version or 'none'} is not supported (expected 1)"
    return "ready"


def transient(exc: BaseException) -> bool:
    """Worth retrying: the server is unreachable, restarting, or a racing writer got there first."""
    return isinstance(
        exc,
        psycopg.OperationalError | psycopg.InterfaceError | psycopg.errors.UniqueViolation,
    )


def error_line(label: str, what: str, exc: BaseException) -> str:
    """One line naming the database, the operation and what the server or driver said."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    code = f"{type(exc).__name__} {sqlstate}" if sqlstate else type(exc).__name__
    return f"{label}: {what} failed ({code}: {detail})"
