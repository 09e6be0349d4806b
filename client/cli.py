"""``gpuhop``: the developer's and CI runner's command.

It talks to a gateway over SSH and its HTTP API and never imports the gateway
package; the demo is started as a separate process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from client import __version__


def _gateway_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gpuhop")
def main() -> None:
    """gpuhop: choose where GPU work runs, and reach it through one gateway."""


@main.group(invoke_without_command=True)
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option("--detach", is_flag=True, help="Start in the background; return once ready.")
@click.pass_context
def demo(ctx: click.Context, state_dir: Path | None, detach: bool) -> None:
    """Run a local demo: gateway, SQLite, three simulated GPU regions on loopback."""
    if ctx.invoked_subcommand is not None:
        return
    args = ["demo"]
    if state_dir is not None:
        args += ["--state-dir", str(state_dir)]
    if detach:
        args.append("--detach")
    sys.exit(subprocess.call(_gateway_cmd(*args)))


@demo.command("stop")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), default=None)
def demo_stop(state_dir: Path | None) -> None:
    """Stop a demo started with --detach."""
    args = ["demo", "stop"]
    if state_dir is not None:
        args += ["--state-dir", str(state_dir)]
    sys.exit(subprocess.call(_gateway_cmd(*args), env=os.environ.copy()))


if __name__ == "__main__":
    main()
