"""``gpuhop pick``: the gateway's ranking for a job, and its golden test."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from client import credentials, identity
from client.api.base import to_json
from client.api.models import Constraints, Golden
from client.commands.common import settings as load
from client.errors import UsageError
from client.workdir import select_files


@click.command()
@click.option("--gpus", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--gpu-model", default="", help="e.g. H100 (matched against the host's GPUs).")
@click.option("--max-latency", type=float, default=None, help="End-to-end latency bound, ms.")
@click.option("--max-price", type=float, default=None, help="Price bound per GPU-hour.")
@click.option("--data", default="", help="Data set the job reads (residency).")
@click.option("--hours", type=float, default=1.0, show_default=True, help="Expected run time.")
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default=Path("."))
@click.option("--weights", default="1,1,1", show_default=True, help="cost,latency,sync weights.")
@click.option(
    "--golden",
    is_flag=True,
    help="Also run a short job (COMMAND, or the gateway's default) on the best hosts and "
    "show measured time and cost beside the prediction.",
)
@click.option("--top", type=click.IntRange(1, 8), default=3, show_default=True,
              help="With --golden: how many of the best hosts run it.")  # fmt: skip
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1, max=600), default=60.0,
              show_default=True, help="With --golden: seconds each host may take.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="The ranking as JSON.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def pick(
    gpus: int,
    gpu_model: str,
    max_latency: float | None,
    max_price: float | None,
    data: str,
    hours: float,
    workdir: Path,
    weights: str,
    golden: bool,
    top: int,
    timeout_s: float,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Rank the hosts that fit a job by expected cost and latency, and say why every other
    host does not fit. Latency is end to end (your round trip to the gateway plus the
    gateway's to the host); the sync estimate is the time to send --workdir there.

    With --golden, the best --top hosts also run a short job at once (COMMAND after
    `--`, or the gateway's default: nvidia-smi and a little throughput) with the GPUs
    leased, and each shows measured time and cost beside the prediction. Exit status 1
    when no host ran it successfully."""
    try:
        w_cost, w_latency, w_sync = (float(x) for x in weights.split(","))
    except ValueError as exc:
        raise UsageError("--weights wants three numbers: cost,latency,sync") from exc
    selection = select_files(workdir.resolve())
    settings = load()
    creds = credentials.resolve(settings)
    if command and not golden:
        raise UsageError("a COMMAND is only run with --golden")
    with identity.open_api(creds.url, creds.token, settings) as api:
        samples = []
        for _ in range(3):  # the client's own round trip to the gateway: best of three
            t0 = time.perf_counter()
            api.me()
            samples.append((time.perf_counter() - t0) * 1000)
        constraints = Constraints(
            gpus=gpus,
            gpu_model=gpu_model,
            max_latency_ms=max_latency,
            max_price=max_price,
            data=data,
            hours=hours,
            workdir_bytes=sum(f.path.stat().st_size for f in selection.files),
            workdir_files=len(selection.files),
            client_rtt_ms=round(min(samples), 3),
            w_cost=w_cost,
            w_latency=w_latency,
            w_sync=w_sync,
        )
        if golden:  # the same ranking, then the job on its best --top hosts
            measured = api.golden(
                constraints,
                timeout_s=timeout_s,
                top=top,
                command=shlex.join(command) if len(command) > 1 else "".join(command),
            )
            _show_golden(measured, as_json)
            if not any(h.status == "ok" for h in measured.hosts):
                raise SystemExit(1)
            return
        result = api.placement(constraints)
    if as_json:
        click.echo(json.dumps(to_json(result), indent=2))
        return
    console = Console(highlight=False)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("#", "HOST", "REGION", "COST", "LATENCY", "SYNC", "FREE", "$/GPU-H", "SCORE"):
        table.add_column(column)
    for r in result.ranked:
        table.add_row(
            str(r.rank),
            r.name,
            r.region,
            f"{r.expected_cost:.2f} {r.currency}",
            f"{r.latency_ms:.0f} ms",
            f"{r.sync_s:.1f} s",
            str(r.free_gpus),
            f"{r.price_per_gpu_hour:.2f}",
            f"{r.score:.3f}",
        )
    console.print(table)
    if result.excluded:
        console.print("[bold]excluded[/]")
        for e in result.excluded:
            console.print(f"  {e.name:<16} {e.region:<6} {'; '.join(e.reasons)}")


def _show_golden(result: Golden, as_json: bool) -> None:
    """The golden test, one host a row: prediction, then what was measured."""
    if as_json:
        click.echo(json.dumps(to_json(result), indent=2))
        return

    def ms(value: float) -> str:
        return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"

    rows: list[tuple[list[str], str, str]] = []  # plain cells, result style, output
    for h in result.hosts:
        verdict = h.status if h.exit_status in (None, 0) else f"{h.status} ({h.exit_status})"
        ran = h.status in ("ok", "failed", "timeout")
        cells = [
            str(h.rank),
            h.name,
            f"{h.predicted_cost:.2f} {h.currency}",
            ms(h.predicted_latency_ms),
            verdict,
            f"{h.seconds:.2f} s" if ran else "-",
            ms(h.rtt_ms) if h.rtt_ms is not None else "-",
            f"{h.measured_cost:.6f}" if ran else "-",
        ]
        detail = h.error if h.status != "ok" else (h.output[-1] if h.output else "")
        rows.append((cells, "green" if h.status == "ok" else "red", detail))
    headers = ("#", "HOST", "PREDICTED", "LATENCY", "RESULT", "TIME", "RTT", "COST")
    widths = [max([len(t), *(len(c[i]) for c, _, _ in rows)]) for i, t in enumerate(headers)]
    console = Console(highlight=False)
    console.print(f"golden test: [bold]{escape(result.command)}[/]")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in headers:
        table.add_column(column, no_wrap=True)
    # The measured columns keep their width; the output gets what is left of the line.
    room = max(8, console.width - sum(widths) - 2 * len(headers))
    table.add_column("OUTPUT", no_wrap=True, overflow="ellipsis", max_width=room)
    for cells, style, detail in rows:
        cells[4] = f"[{style}]{cells[4]}[/]"
        table.add_row(*cells, escape(detail))
    console.print(table)
    if not result.hosts:
        console.print("[red]no host qualifies[/]; see `gpuhop pick` for the reasons")
