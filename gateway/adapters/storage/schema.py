"""Tables for API tokens, session records and the directory, and the schema version check.

The audit log shares the database (its own ``meta`` and ``audit_events``
tables); nothing here reads or writes those. Alembic creates and upgrades all
of them (``gateway.adapters.storage.migrate``, scripts in ``migrations/``); these table
objects are what the queries use, and must match the newest revision.
``storage_meta`` keeps this schema's version as a second check: a revision that
changes these tables updates it and ``SCHEMA_VERSION`` together.

Times are float seconds since the epoch, as in the audit log.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.errors import StorageError

SCHEMA_VERSION = 6

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
    sa.Column("parent_id", sa.String(32), nullable=True),  # the token that minted this one
    sa.CheckConstraint("scope IN ('user', 'ci', 'admin', 'metrics')", name="api_tokens_scope"),
    sa.Index("api_tokens_hash", "token_hash", unique=True),
    sa.Index("api_tokens_user", "user", "created_at"),
    sa.Index("api_tokens_parent", "parent_id"),
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
    sa.Column("node", sa.String(128), nullable=False, server_default=""),
    sa.Column("replica", sa.String(160), nullable=False, server_default=""),  # its process
    sa.Index("session_records_started", "started_at", "id"),
    sa.Index("session_records_user", "user", "started_at", "id"),
)


def _who() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
    ]


# The directory (revision 0002): what admins add at run time; see gateway.directory.
directory_version = sa.Table(
    "directory_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("changed_at", sa.Double, nullable=False),
    sa.CheckConstraint("id = 1", name="directory_version_one_row"),
)

directory_teams = sa.Table(
    "directory_teams", metadata, sa.Column("name", sa.String(64), primary_key=True), *_who()
)

directory_users = sa.Table(
    "directory_users",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("team", sa.String(64), nullable=False),
    *_who(),
)

directory_keys = sa.Table(
    "directory_keys",
    metadata,
    sa.Column("fingerprint", sa.String(128), primary_key=True),  # SHA256:..., one owner a key
    sa.Column(
        "user",
        sa.String(64),
        sa.ForeignKey("directory_users.name", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("key_line", sa.Text, nullable=False),
    *_who(),
    sa.Index("directory_keys_user", "user"),
)

directory_roles = sa.Table(
    "directory_roles",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),  # RoleConfig as JSON
    *_who(),
)

directory_grants = sa.Table(
    "directory_grants",
    metadata,
    sa.Column(
        "user",
        sa.String(64),
        sa.ForeignKey("directory_users.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("role", sa.String(64), primary_key=True),
    *_who(),
)

directory_datasets = sa.Table(
    "directory_datasets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),  # DatasetConfig as JSON
    *_who(),
)

directory_budgets = sa.Table(
    "directory_budgets",
    metadata,
    sa.Column("owner_kind", sa.String(8), primary_key=True),
    sa.Column("owner", sa.String(64), primary_key=True),
    sa.Column("daily", sa.Double, nullable=True),
    sa.Column("monthly", sa.Double, nullable=True),
    *_who(),
    sa.CheckConstraint("owner_kind IN ('user', 'team')", name="directory_budgets_kind"),
)

directory_hosts = sa.Table(
    "directory_hosts",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),  # HostConfig as JSON
    *_who(),
)

# Replicas and GPU leases (revision 0005): what several gateways on one database share.
gateway_replicas = sa.Table(
    "gateway_replicas",
    metadata,
    sa.Column("replica", sa.String(160), primary_key=True),  # node + one id per process start
    sa.Column("node", sa.String(128), nullable=False),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("heartbeat_at", sa.Double, nullable=False),
)

gpu_leases = sa.Table(
    "gpu_leases",
    metadata,
    # A row: this replica uses this GPU for this lease (session or passthrough hold).
    # Every live row of one (host, gpu) names one lease: see gateway.adapters.storage.leases.
    sa.Column("host", sa.String(64), primary_key=True),
    sa.Column("gpu", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("session_id", sa.String(160), primary_key=True),
    sa.Column("replica", sa.String(160), primary_key=True),
    sa.Column("acquired_at", sa.Double, nullable=False),
    sa.Index("gpu_leases_session", "session_id"),
    sa.Index("gpu_leases_replica", "replica"),
)

# Running costs and kill requests (revision 0006): what one replica asks of, or tells, all;
# gpu_leases as revision 0006 remade it (passthrough holds shared by replicas).
live_costs = sa.Table(
    "live_costs",
    metadata,
    sa.Column("meter_id", sa.String(160), primary_key=True),  # a session or a GPU hold
    sa.Column("replica", sa.String(160), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("usd_per_hour", sa.Double, nullable=False),
    sa.Index("live_costs_user", "user"),
)

session_kills = sa.Table(
    "session_kills",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("replica", sa.String(160), nullable=False),  # the replica running the session
    sa.Column("requested_at", sa.Double, nullable=False),
    sa.Column("requested_by", sa.String(64), nullable=False),
    sa.Index("session_kills_replica", "replica"),
)

OWN_TABLES = frozenset(t.name for t in metadata.sorted_tables)


def ensure_schema(conn: Connection, label: str) -> None:
    """Migrate an empty database, adopt a pre-migration one, refuse an old one; then check.

    Runs inside the caller's writer transaction (see ``migrate.ensure_schema``),
    so two processes starting on one database do not both create the tables.
    """
    from gateway.adapters.storage.migrate import ensure_schema as migrate_schema

    migrate_schema(conn, label)
    check_schema(conn, label)


def check_schema(conn: Connection, label: str) -> None:
    """Refuse storage tables that are not this code's version, or not all there."""
    present = set(sa.inspect(conn).get_table_names()) & OWN_TABLES
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
