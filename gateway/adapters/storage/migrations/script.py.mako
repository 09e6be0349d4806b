"""${message}

Revision ${up_revision}, after ${down_revision | comma,n}. Runs on SQLite and
PostgreSQL inside the caller's transaction (see gateway/storage/migrate.py);
branch on ``op.get_bind().dialect.name`` where the two differ. When it changes
the storage tables, also update ``storage_meta.schema_version`` and
``gateway.storage.schema.SCHEMA_VERSION``; always update ``migrate.HEAD``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
