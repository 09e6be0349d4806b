"""Gateway replicas (heartbeats) and GPU leases, shared by every replica on one database.

``gateway_replicas``: one row per running gateway process, its heartbeat
renewed on a schedule; a row whose heartbeat is older than the timeout is a
dead replica. ``gpu_leases``: one row per leased GPU, primary key
``(host, gpu)``, so two replicas can never both hold one GPU; a lease whose
replica is dead is void and is deleted by the next acquirer on that host.

A frozen copy (never import the live table definitions here).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _version(value: str) -> None:
    meta = sa.table("storage_meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value=value))


def upgrade() -> None:
    op.create_table(
        "gateway_replicas",
        sa.Column("replica", sa.String(160), primary_key=True),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("heartbeat_at", sa.Double, nullable=False),
    )
    op.create_table(
        "gpu_leases",
        sa.Column("host", sa.String(64), primary_key=True),
        sa.Column("gpu", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("replica", sa.String(160), nullable=False),
        sa.Column("acquired_at", sa.Double, nullable=False),
    )
    op.create_index("gpu_leases_session", "gpu_leases", ["session_id"])
    op.create_index("gpu_leases_replica", "gpu_leases", ["replica"])
    _version("5")


def downgrade() -> None:
    op.drop_table("gpu_leases")
    op.drop_table("gateway_replicas")
    _version("4")
