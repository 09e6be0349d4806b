"""``gpuhop``: the developer's and CI runner's command.

It talks to a gateway over SSH and its HTTP API and never imports the gateway
package; the demo is started as a separate process. Each command lives in its
own module under ``client.commands`` and is imported only when it runs (click's
lazy subcommands), so ``gpuhop --help`` loads click alone and ``gpuhop run``
does not pay for Textual. Every ``ClientError`` becomes one line on stderr and
its exit code (see ``client/errors.py`` and docs/cli.md).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from client import __version__
from client.errors import ClientError

# name -> (module:attribute, the first sentence of its help, which `gpuhop --help` shows
# without importing it; tests/unit/test_client_cli.py keeps each equal to the command's).
COMMANDS: dict[str, tuple[str, str]] = {
    "admin": (
        "client.admin:admin",
        "Manage the gateway's users, keys, roles, teams, data sets, budgets and hosts.",
    ),
    "demo": (
        "client.commands.demo:demo",
        "Run a local demo: gateway, SQLite, three simulated GPU regions on loopback.",
    ),
    "env": (
        "client.commands.env:env",
        "Reproducible environments: images/<name> (Dockerfile + locked dependencies).",
    ),
    "hosts": (
        "client.commands.hosts:hosts",
        "List the gateway's hosts: GPUs, price, status, latency, and whether you may use them.",
    ),
    "login": (
        "client.commands.login:login",
        "Log in to a gateway with an API token (kept in the OS keyring).",
    ),
    "logout": (
        "client.commands.login:logout",
        "Forget the stored token and certificate (the SSH key stays).",
    ),
    "pick": (
        "client.commands.pick:pick",
        "Rank the hosts that fit a job by expected cost and latency, and say why every "
        "other host does not fit.",
    ),
    "run": (
        "client.commands.run:run",
        "Send the work directory to a host, run COMMAND there, stream its output back.",
    ),
    "ssh": (
        "client.commands.ssh:ssh",
        "Open a shell on HOST, or run COMMAND there, with OpenSSH through the gateway.",
    ),
    "ssh-config": (
        "client.commands.ssh:ssh_config",
        "Print (or --install) an OpenSSH config for the gateway and every host behind it.",
    ),
    "tui": (
        "client.commands.tui:tui",
        "The terminal UI: hosts with live latency and price, sessions, placement, audit.",
    ),
}


class LazyGroup(click.Group):
    """Subcommands imported on first use; every ``ClientError`` mapped to one line and its
    exit code, exactly once."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy or cmd_name in self.commands:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy[cmd_name][0].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module}:{attribute} is not a click command")
        self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            click.echo(f"gpuhop: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
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
        tui = main.get_command(ctx, "tui")
        if tui is not None:
            ctx.invoke(tui)


if __name__ == "__main__":
    main()
