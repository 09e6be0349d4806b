"""Audit stores (SQLite, PostgreSQL, memory) and the anchor file."""
