"""Audit checkpoints: each commit's new chain head, signed with the gateway's checkpoint key.

Written in the same transaction as the events they cover (see
``gateway.audit.checkpoint``). A frozen copy (never import live definitions here).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
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
