"""Schema migrations (Alembic) for the one database gpuhop keeps: storage and audit tables.

One history covers both SQLite and PostgreSQL; revision ``0001`` is the schema
gpuhop created before migrations existed. Rules, applied by every opener:

- an **empty** database is upgraded to the newest revision at once (first start);
- a database **at the newest revision** is used as is (one small query: no
  Alembic import on this path);
- a database made **before migrations** (gpuhop tables, no ``alembic_version``)
  is checked and adopted as revision ``0001``;
- a database **behind** is refused with ``SchemaBehind``: upgrading is an
  operator's decision, ``gpuhop-gateway db upgrade`` (``upgrade(url)``);
- a database **ahead** (written by a newer gpuhop) is refused.

Every step runs inside one writer transaction: ``BEGIN IMMEDIATE`` on SQLite,
``pg_advisory_xact_lock`` on PostgreSQL. Replicas that start together queue
on it; the first migrates, the others then find the schema current. PostgreSQL
runs DDL transactionally, so a failed upgrade leaves the schema as it was.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.errors import StorageError

if TYPE_CHECKING:
    from alembic.config import Config

HEAD: Final[str] = "0006"  # the newest revision; tests check it against the scripts
MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE: Final = "alembic_version"
LOCK_KEY: Final = 0x6770_6875_7000_0002  # pg_advisory_xact_lock key for migrations
STORAGE_TABLES: Final = frozenset({"storage_meta", "api_tokens", "session_records"})
AUDIT_TABLES: Final = frozenset({"meta", "audit_events"})
BASELINE_TABLES: Final = STORAGE_TABLES | AUDIT_TABLES
_UPGRADE_HINT = "run `gpuhop-gateway db upgrade --config FILE` first"


class SchemaBehind(StorageError):
    """The database's schema is older than this gateway's; an operator must upgrade it."""

    def __init__(self, message: str, current: str | None, head: str) -> None:
        super().__init__(message)
        self.current = current
        self.head = head


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for gpuhop's scripts, bound to ``connection`` when given.

    For writing a new revision from a source checkout::

        from alembic import command
        command.revision(alembic_config(), "add data sets")
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def revisions() -> list[str]:
    """Every revision in the scripts, oldest first."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    return [s.revision for s in reversed(list(scripts.walk_revisions()))]


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})


def _version(conn: Connection, tables: Collection[str]) -> str | None:
    if VERSION_TABLE not in tables:
        return None
    rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()  # noqa: S608
    if len(rows) > 1:
        raise StorageError(
            f"database has {len(rows)} schema heads ({', '.join(rows)}); expected one"
        )
    return str(rows[0]) if rows else None


def _meta_version(conn: Connection, table: str) -> str | None:
    query = sa.text(f"SELECT value FROM {table} WHERE key = 'schema_version'")  # noqa: S608
    value = conn.execute(query).scalar()
    return None if value is None else str(value)


def check_legacy(conn: Connection, label: str, tables: Collection[str]) -> None:
    """Refuse a pre-migration database unless each gpuhop table group in it is whole, at v1."""
    storage = STORAGE_TABLES & set(tables)
    if storage:
        if "storage_meta" not in storage:
            raise StorageError(
                f"{label}: has gpuhop tables but no storage_meta; not a gpuhop store"
            )
        found = _meta_version(conn, "storage_meta")
        if found != "1":
            raise StorageError(
                f"{label}: storage schema version {found or 'none'} is not supported (expected 1)"
            )
        missing = sorted(STORAGE_TABLES - storage)
        if missing:
            raise StorageError(
                f"{label}: storage schema is incomplete (missing {', '.join(missing)})"
            )
    audit = AUDIT_TABLES & set(tables)
    if audit:
        if audit != AUDIT_TABLES:
            lacking = ", ".join(sorted(AUDIT_TABLES - audit))
            raise StorageError(f"{label}: audit schema is incomplete (missing {lacking})")
        found = _meta_version(conn, "meta")
        if found != "1":
            raise StorageError(
                f"{label}: audit schema version {found or 'none'} is not supported (expected 1)"
            )


def _run_upgrade(conn: Connection, target: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(conn), target)


def ensure_schema(conn: Connection, label: str, *, upgrade: bool = False) -> tuple[str | None, str]:
    """Bring the schema to ``HEAD`` inside the caller's writer transaction, by the rules above.

    Returns ``(revision before, revision after)``; ``upgrade=True`` is the
    operator's ``db upgrade`` (also moves a database that is behind).
    """
    _lock(conn)
    tables = set(sa.inspect(conn).get_table_names())
    current = _version(conn, tables)
    if current == HEAD:
        return current, HEAD
    if current is not None:
        known = revisions()
        if current not in known:
            raise StorageError(
                f"{label}: schema revision {current} is newer than this gpuhop knows "
                f"(its newest is {HEAD}); upgrade gpuhop"
            )
        if not upgrade:
            raise SchemaBehind(
                f"{label}: schema revision {current} is behind this gateway's {HEAD}; "
                + _UPGRADE_HINT,
                current,
                HEAD,
            )
        _run_upgrade(conn, "head")
        return current, HEAD
    ours = tables & BASELINE_TABLES
    if not ours:
        foreign = sorted(tables - {VERSION_TABLE})
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise StorageError(
                f"{label}: not a gpuhop database (it holds other tables: {shown}); "
                "give gpuhop an empty database"
            )
        _run_upgrade(conn, "head")
        return None, HEAD
    check_legacy(conn, label, tables)
    _run_upgrade(conn, "0001")  # adopt: adds only what the old code had not created yet
    if HEAD != "0001":
        if not upgrade:
            raise SchemaBehind(
                f"{label}: schema predates migrations and is behind {HEAD}; " + _UPGRADE_HINT,
                "0001",
                HEAD,
            )
        _run_upgrade(conn, "head")
    return None, HEAD


def upgrade(url: str) -> tuple[str | None, str]:
    """Upgrade the database a storage URL names to the newest revision (``db upgrade``).

    Returns ``(revision before, revision after)``; ``before`` is None for an
    empty or pre-migration database. Safe to run while gateways are running on
    an older revision only when the release notes say so.
    """
    from gateway.adapters.storage.engine import open_database

    db = open_database(url)
    try:
        return db.run(lambda conn: ensure_schema(conn, db.label, upgrade=True), True)
    finally:
        db.engine.dispose()


def current(url: str) -> str | None:
    """The revision a database is at; None when it is empty or predates migrations."""
    from gateway.adapters.storage.engine import open_database

    db = open_database(url)
    try:
        return db.run(lambda conn: _version(conn, sa.inspect(conn).get_table_names()), False)
    finally:
        db.engine.dispose()


def up_to_date(url: str) -> str:
    """The database's revision when it is this gpuhop's newest (``db current``).

    Raises ``SchemaBehind`` ("upgrade due: at X, code wants Y") for a database
    that is behind, empty or from before migrations, and ``StorageError`` for
    one written by a newer gpuhop.
    """
    rev = current(url)
    if rev == HEAD:
        return rev
    if rev is not None and rev not in revisions():
        raise StorageError(f"at {rev}, newer than this gpuhop's {HEAD}: upgrade gpuhop")
    at = rev or "empty or pre-migration"
    raise SchemaBehind(f"upgrade due: at {at}, code wants {HEAD}", rev, HEAD)


def ensure_url(url: str) -> None:
    """What a starting gateway does: create an empty database's schema, refuse an old one."""
    from gateway.adapters.storage.engine import open_database

    db = open_database(url)
    try:
        db.run(lambda conn: ensure_schema(conn, db.label), True)
    finally:
        db.engine.dispose()
