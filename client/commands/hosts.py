"""``gpuhop hosts``: the inventory, what is free, what it costs, whether you may use it."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from client import credentials, identity
from client.api.base import to_json
from client.api.models import HostView
from client.commands.common import renew_quietly
from client.commands.common import settings as load


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


def _host_table(listing: list[HostView]) -> None:
    console = Console(highlight=False)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify in (
        ("HOST", "left"),
        ("REGION", "left"),
        ("STATUS", "left"),
        ("GPU", "left"),
        ("FREE", "right"),
        ("$/GPU-H", "right"),
        ("RTT", "right"),
        ("ACCESS", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    colours = {"up": "green", "down": "red", "unknown": "yellow"}
    for h in listing:
        table.add_row(
            h.name,
            h.region,
            f"[{colours[h.status]}]{h.status}[/]",
            h.gpu_model,
            f"{h.gpus_free}/{h.gpus_total}",
            f"{h.price_per_gpu_hour:.2f}",
            "-" if h.rtt_ms is None else f"{h.rtt_ms:.0f} ms",
            "yes" if h.allowed else "[dim]no[/]",
        )
    console.print(table)
