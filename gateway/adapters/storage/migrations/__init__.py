"""Alembic migrations for everything gpuhop stores (run through
``gateway.adapters.storage.migrate``)."""
