"""``gpuhop pick``: the gateway's ranking for a job, and its golden test."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import click
from rich.markup import escape

from client import credentials, identity
from client.api.base import to_json
from client.api.models import Constraints, Golden, GoldenHost, Placement
from client.commands.common import settings as load
from client.errors import HostNotFound, UsageError
from client.tables import Column, console, print_table
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
    when no host ran it successfully; 68 when no host fits at all."""
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
    else:
        _ranking_table(result)
    if not result.ranked:
        raise HostNotFound("no host fits these constraints; each excluded host says why")


RANKED_COLUMNS = tuple(
    Column(h, right=h not in ("HOST", "REGION"))
    for h in ("#", "HOST", "REGION", "COST", "LATENCY", "SYNC", "FREE", "$/GPU-H", "SCORE")
)
EXCLUDED_COLUMNS = (Column("EXCLUDED"), Column("REGION"), Column("WHY", fill=True))
GOLDEN_COLUMNS = (
    *(Column(h) for h in ("#", "HOST", "PREDICTED", "LATENCY", "RESULT", "TIME", "RTT", "COST")),
    Column("OUTPUT", fill=True),
)


def _ranking_table(result: Placement) -> None:
    """The gateway's ranking as it came, then every excluded host and why."""
    print_table(
        RANKED_COLUMNS,
        (
            (
                str(r.rank),
                escape(r.name),
                escape(r.region),
                f"{r.expected_cost:.2f} {r.currency}",
                f"{r.latency_ms:.0f} ms",
                f"{r.sync_s:.1f} s",
                str(r.free_gpus),
                f"{r.price_per_gpu_hour:.2f}",
                f"{r.score:.3f}",
            )
            for r in result.ranked
        ),
    )
    if result.excluded:
        rows = (
            (escape(e.name), escape(e.region), escape("; ".join(e.reasons)))
            for e in result.excluded
        )
        print_table(EXCLUDED_COLUMNS, rows)


def _show_golden(result: Golden, as_json: bool) -> None:
    """The golden test, one host a row: prediction, then what was measured."""
    if as_json:
        click.echo(json.dumps(to_json(result), indent=2))
        return
    out = console()
    out.print(f"golden test: [bold]{escape(result.command)}[/]")
    print_table(GOLDEN_COLUMNS, (_golden_row(h) for h in result.hosts), out)
    if not result.hosts:
        out.print("[red]no host qualifies[/]; see `gpuhop pick` for the reasons")


def _golden_row(h: GoldenHost) -> list[str]:
    verdict = h.status if h.exit_status in (None, 0) else f"{h.status} ({h.exit_status})"
    style = "green" if h.status == "ok" else "red"
    ran = h.status in ("ok", "failed", "timeout")
    detail = h.error if h.status != "ok" else (h.output[-1] if h.output else "")
    return [
        str(h.rank),
        escape(h.name),
        f"{h.predicted_cost:.2f} {h.currency}",
        _ms(h.predicted_latency_ms),
        f"[{style}]{escape(verdict)}[/]",
        f"{h.seconds:.2f} s" if ran else "-",
        _ms(h.rtt_ms) if h.rtt_ms is not None else "-",
        f"{h.measured_cost:.6f}" if ran else "-",
        escape(detail),
    ]


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"
