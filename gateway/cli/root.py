"""``gpuhop-gateway``: run the gateway and administer it locally.

The root group, ``serve``, ``check-config`` and ``token``; the
other groups live in their own modules beside this one and are added here, so
no command module imports this one.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import click

from client.durations import parse_duration
from gateway import __version__
from gateway.cli.audit import audit_commands
from gateway.cli.common import CONFIG_OPTION, load, one_line_errors
from gateway.cli.db import db
from gateway.cli.directory import admin
from gateway.cli.keys import ca, hostkey
from gateway.config.loader import load_settings
from gateway.errors import ConfigError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gpuhop-gateway")
def main() -> None:
    """gpuhop gateway: one SSH entry point, one policy, an audit log, for every GPU region."""


@main.command()
@CONFIG_OPTION
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Worker processes.")
@click.option("--listen-fd", type=int, default=None, hidden=True)
@click.option("--api-listen-fd", type=int, default=None, hidden=True)
@click.option(
    "--ready-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write {pid, ssh_port} as JSON here once listening (for scripts).",
)
@one_line_errors
def serve(
    config_path: Path,
    workers: int | None,
    listen_fd: int | None,
    api_listen_fd: int | None,
    ready_file: Path | None,
) -> None:
    """Run the gateway until SIGTERM, then drain sessions and stop."""
    from gateway.server import run_event_loop, serve, supervise

    settings = load(config_path)
    n = workers or settings.gateway.workers
    if listen_fd is None and n > 1:
        sys.exit(supervise(config_path, settings, n, ready_file))
    sock = socket.socket(fileno=listen_fd) if listen_fd is not None else None
    api_sock = socket.socket(fileno=api_listen_fd) if api_listen_fd is not None else None
    run_event_loop(serve(settings, sock=sock, api_sock=api_sock, ready_file=ready_file))


@main.command("check-config")
@CONFIG_OPTION
@one_line_errors
def check_config(config_path: Path) -> None:
    """Validate a config file and print a summary."""
    settings = load_settings(config_path)
    inv = settings.inventory()
    click.echo(
        f"{config_path}: ok ({len(inv.regions)} regions, {len(inv.hosts)} hosts, "
        f"{len(inv.users)} users, {len(inv.roles)} roles)"
    )


@main.group()
def token() -> None:
    """API tokens (for the HTTP API and the gpuhop command)."""


@token.command("create")
@CONFIG_OPTION
@click.option("--user", "user_name", required=True)
@click.option(
    "--scope",
    type=click.Choice(["user", "ci", "admin", "metrics"]),
    default="user",
    show_default=True,
)
@click.option("--name", default="cli", show_default=True)
@click.option("--ttl", default="30d", show_default=True, help="e.g. 12h, 30d")
@one_line_errors
def token_create(config_path: Path, user_name: str, scope: str, name: str, ttl: str) -> None:
    """Create an API token; prints the secret (shown once) on stdout."""
    from gateway.adapters.storage import Scope
    from gateway.edges.http.bootstrap import create_token_blocking

    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        raise ConfigError(f"--ttl: {exc}") from exc
    created = create_token_blocking(
        load_settings(config_path), user=user_name, scope=Scope(scope), name=name, ttl_s=seconds
    )
    click.echo(created.secret)
    click.echo(f"token {created.token.id} for {user_name} ({scope})", err=True)


for group in (ca, hostkey, audit_commands, db, admin):
    main.add_command(group)
