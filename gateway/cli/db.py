"""``gpuhop-gateway db``: the storage database's schema.

Each command finds the database by ``--database URL`` (or the
``GPUHOP_GATEWAY__STORAGE_URL`` the gateway itself reads) or, without it, by the
``storage_url`` of ``--config FILE``, so an upgrade can run from a machine (or
the Helm chart's migration Job) that holds only the URL.
"""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.common import config_option, one_line_errors
from gateway.config.loader import load_settings
from gateway.errors import ConfigError

DATABASE_OPTION = click.option(
    "--database",
    "database_url",
    metavar="URL",
    default=None,
    envvar="GPUHOP_GATEWAY__STORAGE_URL",
    help="Storage URL (sqlite:///FILE or postgresql://...); replaces the config's storage_url. "
    "Env: GPUHOP_GATEWAY__STORAGE_URL.",
)


def storage_url(config_path: Path | None, database_url: str | None) -> str:
    """The database a db command works on: ``--database``, else the config's ``storage_url``."""
    if database_url:
        return database_url
    if config_path is None:
        raise ConfigError("give --config FILE (or GPUHOP_CONFIG) or --database URL")
    return load_settings(config_path).gateway.storage_url.get_secret_value()


@click.group()
def db() -> None:
    """Database schema (migrations, SQLite or PostgreSQL)."""


@db.command("upgrade")
@config_option(required=False)
@DATABASE_OPTION
@one_line_errors
def db_upgrade(config_path: Path | None, database_url: str | None) -> None:
    """Migrate the storage database to this gpuhop's schema (safe with several replicas)."""
    from gateway.adapters.storage.migrate import upgrade

    before, after = upgrade(storage_url(config_path, database_url))
    click.echo(f"database schema at revision {after} (was {before or 'empty or pre-migration'})")


@db.command("current")
@config_option(required=False)
@DATABASE_OPTION
@one_line_errors
def db_current(config_path: Path | None, database_url: str | None) -> None:
    """Print the database's schema revision; exit 3 when it is not this gpuhop's newest.

    A database behind (or empty) fails with "upgrade due: at X, code wants Y",
    so a deploy script can run ``db current || db upgrade``.
    """
    from gateway.adapters.storage.migrate import up_to_date

    click.echo(up_to_date(storage_url(config_path, database_url)))
