"""Audit checkpoints, and which gateway node holds each session record.

``audit_checkpoints``: each commit's new chain head, signed with the gateway's
checkpoint key, written in the same transaction as the events they cover (see
``gateway.domain.audit.checkpoint``). ``session_records.node``: the gateway node that
brokered the session, so a node restarting after a crash closes only its own
records (``gateway.services.reconcile``); records from before are ``''``.
A frozen copy (never import live definitions here).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _meta_version(value: str) -> None:
    meta = sa.table("storage_meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value=value))


def upgrade() -> None:
    with op.batch_alter_table("session_records") as batch:
        batch.add_column(sa.Column("node", sa.String(128), nullable=False, server_default=""))
    _meta_version("3")
    if "audit_checkpoints" in sa.inspect(op.get_bind()).get_table_names():
        return  # made by a SQLite audit store opened before this revision ran
    op.create_table(
        "audit_checkpoints",
        sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.Text, nullable=False),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("session_records") as batch:
        batch.drop_column("node")
    _meta_version("2")
