"""Tables for API tokens and session records, and the schema version check.

The audit log may share the database (its own ``meta`` and ``audit_events``
tables); nothing here reads or writes those. ``storage_meta`` holds this
schema's version. For now a fresh database gets ``create_all`` and any other
version is refused; a migration tool replaces that step when the schema first
changes, taking version 1 as its baseline.

Times are float seconds since the epoch, as in the audit log.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.errors import StorageError

SCHEMA_VERSION = 1

metadata = sa.MetaData()

storage_meta = sa.Table(
    "storage_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False),  # sha256 hex of the secret
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double, nullable=True),
    sa.Column("last_used_at", sa.Double, nullable=True),
    sa.CheckConstraint("scope IN ('user', 'ci', 'admin')", name="api_tokens_scope"),
    sa.Index("api_tokens_hash", "token_hash", unique=True),
    sa.Index("api_tokens_user", "user", "created_at"),
)

session_records = sa.Table(
    "session_records",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False),
    sa.Column("host", sa.String(64), nullable=False),
    sa.Column("region", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("source", sa.String(128), nullable=False),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("ended_at", sa.Double, nullable=True),
    sa.Column("bytes_up", sa.BigInteger, nullable=False),
    sa.Column("bytes_down", sa.BigInteger, nullable=False),
    sa.Column("exit_status", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("gpus", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Double, nullable=True),
    sa.Index("session_records_started", "started_at", "id"),
    sa.Index("session_records_user", "user", "started_at", "id"),
)

OWN_TABLES = frozenset(t.name for t in metadata.sorted_tables)


def ensure_schema(conn: Connection, label: str) -> None:
    """Create the tables in an empty database, or check the version of existing ones.

    Runs inside the caller's (writer) transaction, so two processes starting
    on one SQLite file do not both create the tables.
    """
    present = set(sa.inspect(conn).get_table_names()) & OWN_TABLES
    if not present:
        metadata.create_all(conn)
        conn.execute(
            storage_meta.insert(),
            [
                {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                {"key": "app", "value": "gpuhop"},
            ],
        )
        return
    if storage_meta.name not in present:
        raise StorageError(f"{label}: has gpuhop tables but no storage_meta; not a gpuhop store")
    found = conn.execute(
        sa.select(storage_meta.c.value).where(storage_meta.c.key == "schema_version")
    ).scalar()
    if found != str(SCHEMA_VERSION):
        raise StorageError(
            f"{label}: storage schema version {found or 'none'} is not supported "
            f"(expected {SCHEMA_VERSION})"
        )
    missing = sorted(OWN_TABLES - present)
    if missing:
        raise StorageError(f"{label}: storage schema is incomplete (missing {', '.join(missing)})")
