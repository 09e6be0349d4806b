"""Alembic migrations for everything gpuhop stores (run through ``gateway.storage.migrate``)."""
