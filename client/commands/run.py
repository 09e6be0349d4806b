"""``gpuhop run``: send the work directory, run a command on a host, stream it back."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from client import credentials, identity
from client import workdir as wd
from client.api.models import HostView
from client.commands.common import env_pair
from client.commands.common import settings as load
from client.errors import ClientError, UsageError
from client.run import (
    Runner,
    RunRequest,
    RunSummary,
    StdStreams,
    install_signals,
    new_run_id,
)
from client.services.gateway import gateway_connector
from client.services.images import ensure_image, image_ref
from client.services.placement import place
from client.settings import ClientSettings, parse_duration
from client.tui.format import size as format_size

RUN_EXIT_CODES = """\b
Exit codes:
  0-255  the command's own exit status; a command killed by signal N gives 128+N
  2      bad flags or arguments
  68     no such host, or no allowed host with free GPUs in --region
  69     the gateway could not be reached
  74     the work directory could not be read or unpacked on the host
  75     the host could not be reached, or went silent mid-job (lost host)
  77     the gateway's policy refused the job
  78     not logged in, token refused, or no keyring (set GPUHOP_GATEWAY/GPUHOP_TOKEN)
  124    --timeout passed; the job was killed on the host
  125    with --image: the container could not be created or started on the host
         (e.g. --gpus on a host whose Docker engine has no NVIDIA runtime)
  130    interrupted by SIGINT (143: SIGTERM); the job was killed on the host
"""


@click.command(epilog=RUN_EXIT_CODES, context_settings={"allow_interspersed_args": False})
@click.option("-H", "--host", default="", help="Run on this host.")
@click.option("-r", "--region", default="", help="Run on a host in this region.")
@click.option("--gpus", type=click.IntRange(min=0), default=0, help="GPUs the job needs.")
@click.option("--timeout", default="", help="Kill the job after this long (90s, 30m, 2h).")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=Path("."),
    show_default=True,
    help="Directory to send (git-tracked files in a repo, minus .gpuhopignore).",
)
@click.option("-e", "--env", "env", multiple=True, help="K=V for the command; repeatable.")
@click.option("--data", default="", help="Data set the job reads (residency is checked).")
@click.option(
    "--image",
    default="",
    help="Run in a container of this environment or image (pushed to the host first if "
    "it lacks it); the work directory is /work there.",
)
@click.option(
    "--docker",
    "docker_url",
    envvar="DOCKER_HOST",
    default="unix:///var/run/docker.sock",
    help="With --image: the local Docker engine to push from. Env: DOCKER_HOST.",
)
@click.option("-l", "--user", "account", default="", help="Remote account (default: your first).")
@click.option("--lost-after", default="", help="Give up on a silent host after this long.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary as the last line.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines from gpuhop on stderr.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    host: str,
    region: str,
    gpus: int,
    timeout: str,
    workdir: Path,
    env: tuple[str, ...],
    data: str,
    image: str,
    docker_url: str,
    account: str,
    lost_after: str,
    as_json: bool,
    quiet: bool,
    command: tuple[str, ...],
) -> None:
    """Send the work directory to a host, run COMMAND there, stream its output back.

    COMMAND is run as given, argument by argument (use `sh -c '...'` for shell
    syntax) in a fresh directory holding the work directory's files. stdout
    and stderr stream back separately; gpuhop exits with COMMAND's exit code.
    SIGINT/SIGTERM kill the job on the host before gpuhop exits.

    \b
    gpuhop run --host sg-a100-1 -- python train.py --epochs 1
    gpuhop run --region sg --gpus 2 --timeout 30m --json -- make test
    gpuhop run --host sg-a100-1 --image base --gpus 1 -- python train.py

    With --image, COMMAND runs in a container of that image (`base` means the
    environment gpuhop-env/base): the work directory mounted at /work, the
    --env variables set, the leased GPUs attached. The image is pushed to the
    host first when the host lacks it or holds another build of it.
    """
    settings = load()
    if lost_after:
        settings = dataclasses.replace(settings, lost_after_s=max(3.0, parse_duration(lost_after)))
    if host and region:
        raise UsageError("give --host or --region, not both")
    timeout_s = parse_duration(timeout) if timeout else None
    pairs = tuple(env_pair(e) for e in env)
    profile = identity.ready(settings)
    info = (
        _place(settings, host, region, gpus, data)
        if (region or not host or as_json or gpus)
        else None
    )
    target = info.name if info is not None else host
    selection = wd.select_files(workdir)
    ref = ""
    if image:
        ref = image_ref(image)
        notify = _quiet if quiet else (lambda line: click.echo(f"gpuhop: {line}", err=True))
        connect_gateway = gateway_connector(settings)
        asyncio.run(ensure_image(connect_gateway, docker_url, ref, target, notify))

    request = RunRequest(
        host=target,
        command=command,
        selection=selection,
        env=pairs,
        gpus=gpus,
        timeout_s=timeout_s,
        account=account,
        data=data,
        image=ref,
    )
    out = StdStreams()
    run_id = new_run_id()

    def sending() -> None:
        size = wd.total_size(selection)
        click.echo(
            f"gpuhop: run {run_id} on {target}: sending {len(selection.files)} files "
            f"({format_size(size)}, {selection.source})",
            err=True,
        )

    paths = identity.paths_of(settings)
    runner = Runner(
        request,
        profile,
        paths,
        settings,
        out,
        run_id=run_id,
        connected=_quiet_call if quiet else sending,
    )

    async def go() -> RunSummary:
        undo = install_signals(runner)
        try:
            return await runner.run()
        finally:
            undo()

    try:
        summary = asyncio.run(go())
    except ClientError as exc:
        if not as_json:
            raise
        summary = runner.failure(exc)
    if summary.error is not None and not summary.error_shown:
        click.echo(f"gpuhop: {summary.error}", err=True)
    if as_json:
        if not out.ends_with_newline:
            out.stdout(b"\n")
        click.echo(json.dumps(_summary_json(summary, info, gpus)))
    sys.exit(summary.exit_code)


def _quiet(line: str) -> None:
    """``--quiet``: gpuhop's own progress lines are dropped."""


def _quiet_call() -> None:
    """``--quiet``: no "sending" line once connected."""


def _place(settings: ClientSettings, host: str, region: str, gpus: int, data: str) -> HostView:
    creds = credentials.resolve(settings)
    with identity.open_api(creds.url, creds.token, settings) as api:
        return place(api, host, region, gpus, data)


def _summary_json(summary: RunSummary, info: HostView | None, gpus: int) -> dict[str, Any]:
    return {
        "run_id": summary.run_id,
        "host": summary.host,
        "region": info.region if info is not None else None,
        "outcome": summary.outcome,
        "exit_code": summary.exit_code,
        "duration_s": summary.duration_s,
        "bytes_sent": summary.bytes_sent,
        "bytes_received": summary.bytes_received,
        "rtt_ms": info.rtt_ms if info is not None else None,
        "gpus": gpus,
        # The gateway meters the job itself (GET /v1/sessions); this is the same formula
        # from the host's list prices: GPUs x price x time + bytes brought back x egress.
        "cost_usd": (
            round(
                gpus * info.price_per_gpu_hour * summary.duration_s / 3600
                + summary.bytes_received / 1e9 * info.egress_per_gb,
                6,
            )
            if info is not None
            else None
        ),
        "error": str(summary.error) if summary.error is not None else None,
    }
