"""``gpuhop hosts``: the inventory, what is free, what it costs, whether you may use it."""

from __future__ import annotations

import json

import click
from rich.markup import escape

from client import credentials, identity
from client.api.base import to_json
from client.api.models import HostView
from client.commands.common import renew_quietly
from client.commands.common import settings as load
from client.tables import Column, print_table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects, for scripts.")
@click.option("-q", "--quiet", is_flag=True, help="Host names only, one a line.")
def hosts(as_json: bool, quiet: bool) -> None:
    """List the gateway's hosts: GPUs, price, status, latency, and whether you may use them."""

    settings = load()
    creds = credentials.resolve(settings)
    with identity.open_api(creds.url, creds.token, settings) as api:
        listing = api.hosts()
    renew_quietly(settings)
    if as_json:
        click.echo(json.dumps([to_json(h) for h in listing], indent=2))
    elif quiet:
        for h in listing:
            click.echo(h.name)
    else:
        _host_table(listing)


HOST_COLUMNS = (
    Column("HOST"),
    Column("REGION"),
    Column("STATUS"),
    Column("GPU", fill=True),
    Column("FREE", right=True),
    Column("$/GPU-H", right=True),
    Column("RTT", right=True),
    Column("ACCESS"),
)
COLOURS = {"up": "green", "down": "red", "unknown": "yellow"}


def _host_table(listing: list[HostView]) -> None:
    print_table(
        HOST_COLUMNS,
        (
            (
                escape(h.name),
                escape(h.region),
                f"[{COLOURS[h.status]}]{h.status}[/]",
                escape(h.gpu_model),
                f"{h.gpus_free}/{h.gpus_total}",
                f"{h.price_per_gpu_hour:.2f}",
                "-" if h.rtt_ms is None else f"{h.rtt_ms:.0f} ms",
                "yes" if h.allowed else "[dim]no[/]",
            )
            for h in listing
        ),
    )
    for reason in dict.fromkeys(h.reason for h in listing if not h.allowed and h.reason):
        names = ", ".join(h.name for h in listing if h.reason == reason)
        click.echo(f"not usable: {names}: {reason}")
