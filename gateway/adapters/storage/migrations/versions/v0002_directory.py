"""Directory: users, keys, roles, grants, teams, data sets, budgets and hosts kept in storage.

What admins add at run time (``gpuhop admin …``, ``gpuhop-gateway admin …``);
the config file's entries are never copied here. Roles, data sets and hosts
keep their fields as the JSON of the config model that validates them (one
``spec`` column), so a field added to the config later needs no migration.
``directory_version`` holds one row whose number every change increments:
replicas poll it to know when to reload.

A frozen copy (never import the live table definitions here).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _who() -> list[sa.Column[object]]:
    """When a row was made and by whom (fresh Column objects: each table needs its own)."""
    return [
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
    ]


def upgrade() -> None:
    version = op.create_table(
        "directory_version",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("changed_at", sa.Double, nullable=False),
        sa.CheckConstraint("id = 1", name="directory_version_one_row"),
    )
    op.bulk_insert(version, [{"id": 1, "version": 0, "changed_at": 0.0}])
    op.create_table("directory_teams", sa.Column("name", sa.String(64), primary_key=True), *_who())
    op.create_table(
        "directory_users",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("team", sa.String(64), nullable=False),
        *_who(),
    )
    op.create_table(
        "directory_keys",
        sa.Column("fingerprint", sa.String(128), primary_key=True),
        sa.Column(
            "user",
            sa.String(64),
            sa.ForeignKey("directory_users.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("key_line", sa.Text, nullable=False),
        *_who(),
    )
    op.create_index("directory_keys_user", "directory_keys", ["user"])
    op.create_table(
        "directory_roles",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("spec", sa.Text, nullable=False),
        *_who(),
    )
    op.create_table(
        "directory_grants",
        sa.Column(
            "user",
            sa.String(64),
            sa.ForeignKey("directory_users.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("role", sa.String(64), primary_key=True),
        *_who(),
    )
    op.create_table(
        "directory_datasets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("spec", sa.Text, nullable=False),
        *_who(),
    )
    op.create_table(
        "directory_budgets",
        sa.Column("owner_kind", sa.String(8), primary_key=True),
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("daily", sa.Double, nullable=True),
        sa.Column("monthly", sa.Double, nullable=True),
        *_who(),
        sa.CheckConstraint("owner_kind IN ('user', 'team')", name="directory_budgets_kind"),
    )
    op.create_table(
        "directory_hosts",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("spec", sa.Text, nullable=False),
        *_who(),
    )
    meta = sa.table("storage_meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="2"))


def downgrade() -> None:
    for table in (
        "directory_hosts",
        "directory_budgets",
        "directory_datasets",
        "directory_grants",
        "directory_roles",
        "directory_keys",
        "directory_users",
        "directory_teams",
        "directory_version",
    ):
        op.drop_table(table)
    meta = sa.table("storage_meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="1"))
