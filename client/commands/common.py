"""What several ``gpuhop`` commands share: settings, a quiet certificate renewal, --docker,
``--env NAME=VALUE``."""

from __future__ import annotations

import re

import click

from client import identity
from client.errors import ClientError, UsageError
from client.settings import ClientSettings, load_settings

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


def env_pair(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` from ``--env`` as a pair; ``UsageError`` for anything else."""
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise UsageError(f"--env wants NAME=VALUE, got {text!r}")
    return key, value
