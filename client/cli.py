"""``gpuhop``: the developer's and CI runner's command.

It talks to a gateway over SSH and its HTTP API and never imports the gateway
package; the demo is started as a separate process. Each command imports what
it needs when it runs, so ``gpuhop run`` does not pay for httpx, pydantic,
rich or keyring unless it has to. Every ``ClientError`` becomes one line on
stderr and its exit code (see ``client/errors.py`` and docs/cli.md).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from client import __version__
from client.errors import ClientError, UsageError

if TYPE_CHECKING:
    from client.api.models import Golden, HostView
    from client.envs.remote import GatewayConnect
    from client.identity import Profile
    from client.run import RunSummary
    from client.settings import ClientSettings

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


class _Group(click.Group):
    """Maps every ClientError to one line on stderr and its exit code, exactly once."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            click.echo(f"gpuhop: {exc}", err=True)
            ctx.exit(exc.exit_code)


def _demo_cmd(*args: str) -> list[str]:
    """The demo runs from the simulated hosts' package (sim/), in a process of its own."""
    if importlib.util.find_spec("gpuhop_sim") is None:
        raise ClientError("the demo needs gpuhop-sim: run ./scripts/demo in a gpuhop checkout")
    return [sys.executable, "-m", "gpuhop_sim.demo", *args]


def _settings() -> ClientSettings:
    from client.settings import load_settings

    return load_settings()


@click.group(
    cls=_Group,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="gpuhop")
@click.pass_context
def main(ctx: click.Context) -> None:
    """gpuhop: choose where GPU work runs, and reach it through one gateway.

    With no command, opens the terminal UI (`gpuhop tui`)."""
    if ctx.invoked_subcommand is None:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            click.echo(ctx.get_help())
            return
        ctx.invoke(tui)


@main.command()
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
    from client.tui import run

    sys.exit(run(gateway, token))


# -- credentials ---------------------------------------------------------------


@main.command()
@click.argument("gateway_url")
@click.option("--token-stdin", is_flag=True, help="Read the API token from stdin (scripts).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def login(gateway_url: str, token_stdin: bool, quiet: bool) -> None:
    """Log in to a gateway with an API token (kept in the OS keyring).

    Verifies the token, stores it, creates the gpuhop SSH key if needed, and
    fetches a short-lived SSH certificate and the gateway's host keys. On CI,
    skip this and set GPUHOP_GATEWAY and GPUHOP_TOKEN instead.
    """
    import getpass

    from client import credentials, identity
    from client.api.clients import Client
    from client.settings import Secret, is_loopback_url, normalize_url

    settings = _settings()
    url = normalize_url(gateway_url)
    if token_stdin:
        raw = sys.stdin.readline().strip()
    else:
        raw = getpass.getpass("API token (gph_...): ").strip()
    if not raw:
        raise UsageError("no token given")
    token = Secret(raw)
    if url.startswith("http://") and not is_loopback_url(url):
        click.echo(f"gpuhop: warning: {url} is plain HTTP; the token crosses unencrypted", err=True)
    with Client(url, token, timeout=settings.http_timeout_s) as api:
        me = api.me()
        credentials.store(url, token)
        profile = identity.enroll(api, settings, token, me)
    if not quiet:
        left = profile.cert_seconds_left() / 60
        click.echo(
            f"Logged in to {url} as {me.user} ({me.scope} token); "
            f"SSH certificate valid for {left:.0f} min, renewed automatically."
        )


@main.command()
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def logout(quiet: bool) -> None:
    """Forget the stored token and certificate (the SSH key stays)."""
    from client import credentials, identity
    from client.errors import NoKeyring

    settings = _settings()
    identity.forget(identity.paths_of(settings))
    try:
        removed = credentials.forget()
    except NoKeyring:
        if not quiet:
            click.echo("Removed the certificate; no OS keyring here, so no token was stored.")
        return
    if not quiet:
        click.echo("Logged out." if removed else "Not logged in; removed any certificate.")
    if settings.token is not None and not quiet:
        click.echo("gpuhop: GPUHOP_TOKEN is still set in this environment", err=True)


# -- hosts -----------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects, for scripts.")
@click.option("-q", "--quiet", is_flag=True, help="Host names only, one a line.")
def hosts(as_json: bool, quiet: bool) -> None:
    """List the gateway's hosts: GPUs, price, status, latency, and whether you may use them."""
    import json

    from client import credentials, identity
    from client.api.base import to_json

    settings = _settings()
    creds = credentials.resolve(settings)
    with identity.open_api(creds.url, creds.token, settings) as api:
        listing = api.hosts()
    _renew_quietly(settings)
    if as_json:
        click.echo(json.dumps([to_json(h) for h in listing], indent=2))
    elif quiet:
        for h in listing:
            click.echo(h.name)
    else:
        _host_table(listing)


def _host_table(listing: list[HostView]) -> None:
    from rich.console import Console
    from rich.table import Table

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


def _renew_quietly(settings: ClientSettings) -> None:
    """Renew the certificate if this machine has a profile; never fail the command for it."""
    from client import identity

    if identity.load_profile(identity.paths_of(settings)) is None:
        return
    try:
        identity.ready(settings)
    except ClientError as exc:
        click.echo(f"gpuhop: warning: could not renew the SSH certificate: {exc}", err=True)


# -- ssh -------------------------------------------------------------------------


def _ssh_ready(settings: ClientSettings, host: str | None = None) -> Profile:
    from client import identity
    from client.errors import HostNotFound

    profile = identity.ready(settings)
    if host is not None and host not in profile.host_keys:
        profile = identity.ready(settings, refresh=True)  # the inventory may have grown
        if host not in profile.host_keys:
            raise HostNotFound(f"unknown host {host}; `gpuhop hosts` lists them")
    return profile


def _write_ssh_config(settings: ClientSettings, profile: Profile) -> Path:
    from client import identity, sshconf

    paths = identity.paths_of(settings)
    entries = [sshconf.HostEntry(n, profile.default_account) for n in sorted(profile.host_keys)]
    text = sshconf.config_text(
        profile,
        paths,
        entries,
        connect_timeout_s=settings.connect_timeout_s,
        keepalive_s=settings.keepalive_interval_s,
        keepalive_count=settings.keepalive_count_max,
    )
    return sshconf.write_config(paths, text)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-l", "--user", "account", default="", help="Remote account (default: your first).")
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(host: str, command: tuple[str, ...], account: str) -> None:
    """Open a shell on HOST, or run COMMAND there, with OpenSSH through the gateway.

    Runs the real `ssh` with a gpuhop-written config (ProxyJump through the
    gateway, the gpuhop certificate, pinned host keys, keepalives every 5 s so
    a dead link ends the session within about 15 s). The exit status is ssh's.
    """
    settings = _settings()
    profile = _ssh_ready(settings, host)
    config = _write_ssh_config(settings, profile)
    argv = [settings.ssh_binary, "-F", str(config)]
    if account:
        argv += ["-l", account]
    argv += [host, *command]
    try:
        os.execvp(argv[0], argv)  # noqa: S606  (ssh's exit status becomes ours)
    except OSError as exc:
        raise ClientError(f"cannot run {argv[0]}: {exc.strerror}") from None


@main.command("ssh-config")
@click.option("--install", is_flag=True, help="Include it from ~/.ssh/config (idempotent).")
@click.option("-q", "--quiet", is_flag=True, help="With --install: print nothing on success.")
def ssh_config(install: bool, quiet: bool) -> None:
    """Print (or --install) an OpenSSH config for the gateway and every host behind it.

    With it, plain `ssh HOST`, `scp`, `rsync` and VS Code Remote-SSH go
    through the gateway with the gpuhop certificate. --install keeps the block
    in a gpuhop-managed file and adds one `Include` line at the top of
    ~/.ssh/config. A `Host *` block that would override it gets a warning.
    """
    from client import identity, sshconf

    settings = _settings()
    profile = identity.ready(settings, refresh=True)
    managed = _write_ssh_config(settings, profile)
    if install:
        config, changed = sshconf.install(managed)
        warning = sshconf.warning_for(config, managed)
        if not quiet:
            state = "now includes" if changed else "already includes"
            click.echo(f"{config} {state} {managed}")
    else:
        click.echo(managed.read_text(), nl=False)
        warning = sshconf.warning_for(sshconf.user_config_path(), None)
    if warning:
        click.echo(f"gpuhop: {warning}", err=True)


# -- run -------------------------------------------------------------------------


@main.command(epilog=RUN_EXIT_CODES, context_settings={"allow_interspersed_args": False})
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
    import asyncio
    import dataclasses
    import json

    from client import identity
    from client import workdir as wd
    from client.run import Runner, RunRequest, StdStreams, install_signals
    from client.settings import parse_duration

    settings = _settings()
    if lost_after:
        settings = dataclasses.replace(settings, lost_after_s=max(3.0, parse_duration(lost_after)))
    if host and region:
        raise UsageError("give --host or --region, not both")
    timeout_s = parse_duration(timeout) if timeout else None
    pairs = tuple(_env_pair(e) for e in env)
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
        ref = _image_ref(image)
        asyncio.run(_ensure_image(settings, docker_url, ref, target, quiet))

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
    runner = Runner(request, profile, identity.paths_of(settings), settings, out)
    if not quiet:
        size = wd.total_size(selection)
        click.echo(
            f"gpuhop: run {runner.run_id} on {target}: sending {len(selection.files)} files "
            f"({_size(size)}, {selection.source})",
            err=True,
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


def _image_ref(name: str) -> str:
    from client.envs.build import env_ref

    return name if ":" in name or "/" in name else env_ref(name)


async def _ensure_image(
    settings: ClientSettings, docker_url: str, ref: str, host: str, quiet: bool
) -> None:
    """Push ``ref`` to ``host`` unless it already holds the local build (or, with no
    local build, any image by that name)."""
    import asyncio
    import contextlib

    from client.envs.engine import DockerEngine, connect
    from client.envs.remote import host_images, push_via_gateway
    from client.errors import DockerUnavailable, EnvError, EnvNotFound

    connect_gateway = _gateway_connector(settings)
    local: DockerEngine | None = None
    local_id: str | None = None
    with contextlib.suppress(DockerUnavailable):
        local = DockerEngine(connect(docker_url), "local")
        local_id = await asyncio.to_thread(local.image_id, ref)
    conn = await connect_gateway()
    try:
        there = (await host_images(conn, [host]))[host]
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()
    if there.error:
        raise EnvError(f"{host}: cannot list its images: {there.error}")
    held = there.tagged(ref)
    if held is not None and (local_id is None or held.image_id == local_id):
        return
    if local is None or local_id is None:
        raise EnvNotFound(f"{ref} is neither on {host} nor on the local engine: build it first")
    if not quiet:
        click.echo(f"gpuhop: pushing {ref} to {host}", err=True)
    await push_via_gateway(local, ref, [host], connect_gateway=connect_gateway)


def _env_pair(text: str) -> tuple[str, str]:
    import re

    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise UsageError(f"--env wants NAME=VALUE, got {text!r}")
    return key, value


def _place(settings: ClientSettings, host: str, region: str, gpus: int, data: str = "") -> HostView:
    """The host to run on: ``--host``; the best-ranked host for ``--region any``
    (the gateway's placement: cost, latency, residency of ``--data``); else the first
    allowed host with free GPUs in ``--region``."""
    from client import credentials, identity
    from client.api.models import Constraints
    from client.errors import HostNotFound

    creds = credentials.resolve(settings)
    with identity.open_api(creds.url, creds.token, settings) as api:
        listing = api.hosts()
        if region == "any" and not host:
            result = api.placement(Constraints(gpus=max(gpus, 1), data=data))
            if not result.ranked:
                why = "; ".join(f"{e.name}: {', '.join(e.reasons)}" for e in result.excluded)
                raise HostNotFound(f"no host qualifies ({why})")
            host = result.ranked[0].name
    if host:
        found = next((h for h in listing if h.name == host), None)
        if found is None:
            raise HostNotFound(f"unknown host {host}; `gpuhop hosts` lists them")
        if gpus and found.gpus_free < gpus:
            raise HostNotFound(f"{host} has {found.gpus_free} free GPUs; {gpus} asked")
        return found
    need = max(gpus, 1)
    for h in listing:
        in_region = not region or h.region == region
        if in_region and h.allowed and h.status != "down" and h.gpus_free >= need:
            return h
    where = f"in region {region}" if region else "anywhere"
    raise HostNotFound(f"no host you may use has {need} free GPU(s) {where}")


@main.command()
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
    import json
    import shlex
    import time

    from client import credentials, identity
    from client.api.base import to_json
    from client.api.models import Constraints
    from client.workdir import select_files

    try:
        w_cost, w_latency, w_sync = (float(x) for x in weights.split(","))
    except ValueError as exc:
        raise UsageError("--weights wants three numbers: cost,latency,sync") from exc
    selection = select_files(workdir.resolve())
    settings = _settings()
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
    from rich.console import Console
    from rich.table import Table

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
    import json

    from client.api.base import to_json

    if as_json:
        click.echo(json.dumps(to_json(result), indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

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


def _size(n: int) -> str:
    from client.tui.format import size  # pure, no Textual: one way to print bytes

    return size(n)


# -- demo ------------------------------------------------------------------------


@main.group()
def env() -> None:
    """Reproducible environments: images/<name> (Dockerfile + locked dependencies)."""


_IMAGES_OPTION = click.option(
    "--images",
    "images_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("images"),
    show_default=True,
    help="Directory holding one sub-directory per environment.",
)
_DOCKER_OPTION = click.option(
    "--docker",
    "docker_url",
    envvar="DOCKER_HOST",
    default="unix:///var/run/docker.sock",
    show_default=True,
    help="Local Docker engine. Env: DOCKER_HOST.",
)


@env.command("build")
@_IMAGES_OPTION
@_DOCKER_OPTION
@click.option("--force", is_flag=True, help="Build even when the fingerprint is unchanged.")
@click.option("-q", "--quiet", is_flag=True, help="No build progress.")
@click.argument("name")
def env_build(images_dir: Path, docker_url: str, force: bool, quiet: bool, name: str) -> None:
    """Build NAME (a directory under --images, or a project with .devcontainer/)."""
    from client.envs.build import build_env
    from client.envs.engine import connect
    from client.envs.spec import resolve

    spec = resolve(images_dir, name)
    client = connect(docker_url)
    progress = None if quiet else (lambda line: click.echo(line, err=True))
    built = build_env(client, spec, progress, force=force)
    state = "unchanged, reused" if built.reused else "built"
    click.echo(f"{built.ref} {built.fingerprint} {built.image_id[:19]} ({state})")


@env.command("ls")
@_DOCKER_OPTION
@click.option("--json", "as_json", is_flag=True)
def env_ls(docker_url: str, as_json: bool) -> None:
    """Built environments: names, fingerprints, sizes."""
    import json

    from client.envs.build import list_envs
    from client.envs.engine import connect

    images = list_envs(connect(docker_url))
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": i.name,
                        "fingerprint": i.fingerprint,
                        "image_id": i.image_id,
                        "size": i.size,
                        "current": i.current,
                    }
                    for i in images
                ],
                indent=2,
            )
        )
        return
    for i in images:
        mark = "*" if i.current else " "
        click.echo(f"{mark} {i.name:<20} {i.fingerprint[:19]:<20} {_size(i.size):>10}")


def _gateway_connector(settings: ClientSettings) -> GatewayConnect:
    """An async factory for one SSH connection to the gateway, logged in as the plain user."""
    from client import identity
    from client.sshconn import connect as ssh_connect

    profile = identity.ready(settings)
    paths = identity.paths_of(settings)

    async def connect_gateway() -> Any:
        return await ssh_connect(profile, paths, settings, profile.user)

    return connect_gateway


@env.command("push")
@_DOCKER_OPTION
@click.option("-q", "--quiet", is_flag=True, help="No progress line.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.argument("name")
@click.argument("hosts", nargs=-1, required=True)
def env_push(
    docker_url: str, quiet: bool, as_json: bool, name: str, hosts: tuple[str, ...]
) -> None:
    """Send NAME's built image to HOSTS through the gateway, then verify its ID there.

    Only the layers the hosts lack are sent, and each crosses your link once: the
    gateway fans it out. An interrupted push leaves every host its previous image.
    """
    import asyncio
    import json

    from client.envs.build import env_ref
    from client.envs.engine import DockerEngine, connect
    from client.envs.remote import push_via_gateway
    from client.envs.sync import Progress
    from client.errors import SyncFailed

    ref = name if ":" in name or "/" in name else env_ref(name)
    local = DockerEngine(connect(docker_url), "local")
    connect_gateway = _gateway_connector(_settings())

    def show(p: Progress) -> None:
        total = f" of ~{_size(p.total)}" if p.total else ""
        end = "\n" if p.done else ""
        click.echo(
            f"\rgpuhop: {ref}: {_size(p.sent)}{total}, {_size(int(p.rate))}/s   {end}",
            nl=False,
            err=True,
        )

    report = asyncio.run(
        push_via_gateway(
            local,
            ref,
            hosts,
            connect_gateway=connect_gateway,
            progress=None if quiet else show,
            check=False,
        )
    )
    if as_json:
        hosts_out = {
            t.target: {"status": t.status, "bytes": t.bytes_sent, "error": t.error}
            for t in report.targets
        }
        click.echo(
            json.dumps(
                {
                    "ref": report.ref,
                    "image_id": report.image_id,
                    "link_bytes": report.link_bytes,
                    "seconds": round(report.seconds, 3),
                    "hosts": hosts_out,
                }
            )
        )
    else:
        for t in report.targets:
            click.echo(f"{t.target:<16} {t.status:<8} {_size(t.bytes_sent):>10}  {t.error or ''}")
        click.echo(
            f"gpuhop: {_size(report.link_bytes)} over your link in {report.seconds:.1f} s",
            err=True,
        )
    if report.failed:
        lines = "; ".join(f"{t.target}: {t.error}" for t in report.failed)
        raise SyncFailed(f"push of {ref} failed on {len(report.failed)} host(s): {lines}")


@env.command("status")
@_DOCKER_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
@click.argument("hosts", nargs=-1)
def env_status_cmd(docker_url: str, as_json: bool, hosts: tuple[str, ...]) -> None:
    """Each host's environments against the local builds: current, drift, missing.

    Without HOSTS, every host the gateway lets you use.
    """
    import asyncio
    import dataclasses
    import json

    from client import credentials, identity
    from client.envs.build import list_envs
    from client.envs.engine import connect
    from client.envs.remote import env_status

    settings = _settings()
    if not hosts:
        creds = credentials.resolve(settings)
        with identity.open_api(creds.url, creds.token, settings) as api:
            hosts = tuple(h.name for h in api.hosts() if h.allowed)
    local = list_envs(connect(docker_url))
    rows = asyncio.run(env_status(hosts, local, connect_gateway=_gateway_connector(settings)))
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    if not rows:
        click.echo("no environments here or on " + ", ".join(hosts), err=True)
    for r in rows:
        there, here = r.remote_fingerprint[:19] or "-", r.local_fingerprint[:19] or "-"
        detail = r.detail or f"{there:<20} local {here}"
        click.echo(f"{r.host:<16} {r.name:<20} {r.state:<12} {detail}")


def _attach_admin() -> None:
    from client.admin import admin

    main.add_command(admin)


_attach_admin()


@main.group(invoke_without_command=True)
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option("--detach", is_flag=True, help="Start in the background; return once ready.")
@click.pass_context
def demo(ctx: click.Context, state_dir: Path | None, detach: bool) -> None:
    """Run a local demo: gateway, SQLite, three simulated GPU regions on loopback.

    On a terminal it opens the TUI on the demo's hosts and stops the demo when you
    quit; with --detach (or without a terminal) it starts in the background and
    prints how to connect."""
    if ctx.invoked_subcommand is not None:
        return
    args: list[str] = []
    if state_dir is not None:
        args += ["--state-dir", str(state_dir)]
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if detach or not interactive:
        if not detach:
            click.echo("no terminal: running the demo in the foreground (Ctrl-C stops it)")
        sys.exit(subprocess.call(_demo_cmd(*args, *(["--detach"] if detach else []))))
    import json

    import platformdirs

    state = (state_dir or Path(platformdirs.user_state_dir("gpuhop")) / "demo").resolve()
    started = subprocess.call(_demo_cmd("--state-dir", str(state), "--detach"))
    if started != 0:
        sys.exit(started)
    info = json.loads((state / "demo.json").read_text())
    os.environ.update(
        GPUHOP_GATEWAY=info["api_url"],
        GPUHOP_TOKEN=info["user_token"],
        GPUHOP_SSH_CONFIG=info["ssh_config"],
    )
    from client.tui import run as run_tui

    try:
        code = run_tui(info["api_url"], info["user_token"])
    finally:
        subprocess.call(_demo_cmd("stop", "--state-dir", str(state)))
    sys.exit(code)


@demo.command("stop")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), default=None)
def demo_stop(state_dir: Path | None) -> None:
    """Stop a demo started with --detach."""
    args = ["stop"]
    if state_dir is not None:
        args += ["--state-dir", str(state_dir)]
    sys.exit(subprocess.call(_demo_cmd(*args), env=os.environ.copy()))


if __name__ == "__main__":
    main()
