"""``gpuhop demo``: a local gateway with simulated GPU regions (``gpuhop_sim``), as a separate
process: the client never imports the gateway."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import platformdirs

from client.errors import ClientError
from client.tui import run as run_tui


def _demo_cmd(*args: str) -> list[str]:
    """The demo runs from the simulated hosts' package (sim/), in a process of its own."""
    if importlib.util.find_spec("gpuhop_sim") is None:
        raise ClientError("the demo needs gpuhop-sim: run ./scripts/demo in a gpuhop checkout")
    return [sys.executable, "-m", "gpuhop_sim.demo", *args]


@click.group(invoke_without_command=True)
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
