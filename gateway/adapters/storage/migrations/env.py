"""Alembic's entry point for gpuhop: run the migrations on the caller's connection.

``gateway.adapters.storage.migrate`` opens the database, starts a writer transaction
(``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL) and passes that
connection in ``config.attributes["connection"]``; every revision then runs
inside it, so concurrent starters wait and a failed upgrade leaves nothing
half-done. Offline mode (``--sql``) prints the SQL for a URL's dialect.
"""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes.get("connection")

if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()
elif connection is None:
    raise RuntimeError(
        "gpuhop migrations run through gateway.adapters.storage.migrate "
        "(gpuhop-gateway db upgrade), which supplies the connection"
    )
else:
    context.configure(
        connection=connection,
        target_metadata=None,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
