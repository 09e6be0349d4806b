"""What several ``gpuhop`` commands share: settings, a quiet certificate renewal, --docker,
the ``ssh`` command's shape for the TUI."""

from __future__ import annotations

import click

from client import identity
from client.errors import ClientError
from client.settings import ClientSettings, load_settings
from client.tui.shell import GpuhopSsh, ssh_shape

DOCKER_OPTION = click.option(
    "--docker",
    "docker_url",
    envvar="DOCKER_HOST",
    default="unix:///var/run/docker.sock",
    show_default=True,
    help="Local Docker engine. Env: DOCKER_HOST.",
)


def settings() -> ClientSettings:
    """The client's settings, loaded once per command."""
    return load_settings()


def renew_quietly(settings: ClientSettings) -> None:
    """Renew the certificate if this machine has a profile; never fail the command for it."""
    if identity.load_profile(identity.paths_of(settings)) is None:
        return
    try:
        identity.ready(settings)
    except ClientError as exc:
        click.echo(f"gpuhop: warning: could not renew the SSH certificate: {exc}", err=True)


def gpuhop_ssh(ctx: click.Context) -> GpuhopSsh | None:
    """How this gpuhop's ``ssh`` command takes arguments, for the TUI's shells (None: none).

    Asked of the root group at run time, so the TUI and the ``ssh`` command need not
    import each other."""
    root = ctx.find_root().command
    return ssh_shape(root) if isinstance(root, click.Group) else None
