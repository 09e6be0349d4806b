"""``gpuhop-gateway db``: the storage database's schema."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.common import CONFIG_OPTION, one_line_errors
from gateway.config.loader import load_settings


@click.group()
def db() -> None:
    """Database schema (migrations, SQLite or PostgreSQL)."""


@db.command("upgrade")
@CONFIG_OPTION
@one_line_errors
def db_upgrade(config_path: Path) -> None:
    """Migrate the storage database to this gpuhop's schema (safe with several replicas)."""
    from gateway.storage.migrate import upgrade

    before, after = upgrade(load_settings(config_path).gateway.storage_url.get_secret_value())
    click.echo(f"database schema at revision {after} (was {before or 'empty or pre-migration'})")


@db.command("current")
@CONFIG_OPTION
@one_line_errors
def db_current(config_path: Path) -> None:
    """Print the database's schema revision."""
    from gateway.storage.migrate import current

    rev = current(load_settings(config_path).gateway.storage_url.get_secret_value())
    click.echo(rev or "empty")
