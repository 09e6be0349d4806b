"""Running costs, kill requests and the replica of each session record.

``live_costs``: one row per running meter (a session or a GPU hold) with its
start and rate, so every replica computes every live session's running cost
from storage. ``session_kills``: a kill asked of one replica for a session
another replica runs; the owner polls for it. ``session_records.replica``: the
gateway process that brokered the session, so its records can be closed when
that process's heartbeat stops. ``gpu_leases`` is made again with the key
``(host, gpu, session_id, replica)``: one user's passthrough hold on a host is
one lease that several replicas use (leases are transient: none survive).

A frozen copy (never import the live table definitions here).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _version(value: str) -> None:
    meta = sa.table("storage_meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value=value))


def upgrade() -> None:
    with op.batch_alter_table("session_records") as batch:
        batch.add_column(sa.Column("replica", sa.String(160), nullable=False, server_default=""))
    op.drop_table("gpu_leases")
    _leases(
        sa.Column("session_id", sa.String(160), primary_key=True),
        sa.Column("replica", sa.String(160), primary_key=True),
    )
    op.create_table(
        "live_costs",
        sa.Column("meter_id", sa.String(160), primary_key=True),
        sa.Column("replica", sa.String(160), primary_key=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("usd_per_hour", sa.Double, nullable=False),
    )
    op.create_index("live_costs_user", "live_costs", ["user"])
    op.create_table(
        "session_kills",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("replica", sa.String(160), nullable=False),
        sa.Column("requested_at", sa.Double, nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
    )
    op.create_index("session_kills_replica", "session_kills", ["replica"])
    _version("6")


def _leases(*key: sa.Column[str]) -> None:
    op.create_table(
        "gpu_leases",
        sa.Column("host", sa.String(64), primary_key=True),
        sa.Column("gpu", sa.Integer, primary_key=True, autoincrement=False),
        *key,
        sa.Column("acquired_at", sa.Double, nullable=False),
    )
    op.create_index("gpu_leases_session", "gpu_leases", ["session_id"])
    op.create_index("gpu_leases_replica", "gpu_leases", ["replica"])


def downgrade() -> None:
    op.drop_table("session_kills")
    op.drop_table("live_costs")
    op.drop_table("gpu_leases")
    _leases(
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("replica", sa.String(160), nullable=False),
    )
    with op.batch_alter_table("session_records") as batch:
        batch.drop_column("replica")
    _version("5")
