"""API tokens: who minted each one (``parent_id``), and the ``metrics`` scope.

A token made with another token records that token's id, so a revocation can
reach everything it minted; tokens made by an operator (the CLI) have none.
``metrics`` tokens only scrape ``/metrics``.

A frozen copy (never import the live table definitions here).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCOPES_BEFORE = "scope IN ('user', 'ci', 'admin')"
SCOPES_AFTER = "scope IN ('user', 'ci', 'admin', 'metrics')"


def _version(value: str) -> None:
    meta = sa.table("storage_meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value=value))


def upgrade() -> None:
    # SQLite cannot alter a CHECK constraint in place: batch mode copies the table.
    with op.batch_alter_table("api_tokens", recreate="auto") as batch:
        batch.add_column(sa.Column("parent_id", sa.String(32), nullable=True))
        batch.drop_constraint("api_tokens_scope", type_="check")
        batch.create_check_constraint("api_tokens_scope", SCOPES_AFTER)
    op.create_index("api_tokens_parent", "api_tokens", ["parent_id"])
    _version("4")


def downgrade() -> None:
    op.drop_index("api_tokens_parent", "api_tokens")
    op.execute("DELETE FROM api_tokens WHERE scope = 'metrics'")
    with op.batch_alter_table("api_tokens", recreate="auto") as batch:
        batch.drop_constraint("api_tokens_scope", type_="check")
        batch.create_check_constraint("api_tokens_scope", SCOPES_BEFORE)
        batch.drop_column("parent_id")
    _version("3")
