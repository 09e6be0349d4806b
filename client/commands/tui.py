"""``gpuhop tui`` (and ``gpuhop`` with no command on a terminal)."""

from __future__ import annotations

import sys

import click

from client.tui import run


@click.command()
@click.option(
    "--gateway",
    metavar="URL",
    default=None,
    help="The gateway's API (default: GPUHOP_GATEWAY, then the stored login).",
)
@click.option(
    "--token",
    default=None,
    help="An API token (default: GPUHOP_TOKEN, then the stored login); "
    "prefer the variable: other local users can see command lines.",
)
def tui(gateway: str | None, token: str | None) -> None:
    """The terminal UI: hosts with live latency and price, sessions, placement, audit."""
    sys.exit(run(gateway, token))
