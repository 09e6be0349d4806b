"""Baseline: API tokens, session records and the audit log, as gpuhop 0.1 created them.

A frozen copy of that schema (never import the live table definitions here).
Databases made before migrations existed already hold some of these tables:
each group (storage, audit) is created only when its marker table is missing,
and ``gateway.adapters.storage.migrate`` has checked beforehand that a group found is
complete and at version 1, so adopting such a database only adds what it lacks.

The audit log's data column is TEXT on both dialects: the hash covers the
canonical JSON text exactly as stored, and jsonb would re-format it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SQLITE_AUDIT = (
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE audit_events(id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL,"
    " actor TEXT NOT NULL, data TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
    "CREATE INDEX audit_events_kind ON audit_events(kind, id)",
    "CREATE INDEX audit_events_actor ON audit_events(actor, id)",
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events"
    " BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events"
    " BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
)

_POSTGRES_AUDIT = (
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE audit_events(id BIGINT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL,"
    " kind TEXT NOT NULL, actor TEXT NOT NULL, data TEXT NOT NULL,"
    " prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
    "CREATE INDEX audit_events_kind ON audit_events(kind, id)",
    "CREATE INDEX audit_events_actor ON audit_events(actor, id)",
    # Guards against accidents, not attackers (an owner can drop them); the chain
    # catches attackers.
    "CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN RAISE EXCEPTION 'audit_events is append-only'; END $$",
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events"
    " FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()",
)

_VERSION_ROWS = [{"key": "schema_version", "value": "1"}, {"key": "app", "value": "gpuhop"}]


def _storage() -> None:
    meta = op.create_table(
        "storage_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("revoked_at", sa.Double, nullable=True),
        sa.Column("last_used_at", sa.Double, nullable=True),
        sa.CheckConstraint("scope IN ('user', 'ci', 'admin')", name="api_tokens_scope"),
    )
    op.create_index("api_tokens_hash", "api_tokens", ["token_hash"], unique=True)
    op.create_index("api_tokens_user", "api_tokens", ["user", "created_at"])
    op.create_table(
        "session_records",
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
    )
    op.create_index("session_records_started", "session_records", ["started_at", "id"])
    op.create_index("session_records_user", "session_records", ["user", "started_at", "id"])
    op.bulk_insert(meta, _VERSION_ROWS)


def _audit(dialect: str) -> None:
    statements = _POSTGRES_AUDIT if dialect == "postgresql" else _SQLITE_AUDIT
    for statement in statements:
        op.execute(statement)
    meta = sa.table("meta", sa.column("key", sa.Text), sa.column("value", sa.Text))
    op.bulk_insert(meta, _VERSION_ROWS)


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    if "storage_meta" not in existing:
        _storage()
    if "meta" not in existing:
        _audit(bind.dialect.name)


def downgrade() -> None:
    raise NotImplementedError("the baseline cannot be undone: it would drop the audit log")
