"""``gpuhop ssh`` and ``gpuhop ssh-config``: OpenSSH through the gateway."""

from __future__ import annotations

import os

import click

from client import identity, sshconf
from client.commands.common import env_pair
from client.commands.common import settings as load
from client.errors import ClientError
from client.services.ssh import session_variables, ssh_argv, ssh_ready, write_ssh_config


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-l", "--user", "account", default="", help="Remote account (default: your first).")
@click.option(
    "--gpus", type=click.IntRange(min=0), default=0, help="GPUs to lease for the session."
)
@click.option("-e", "--env", "env", multiple=True, help="NAME=VALUE for the session; repeatable.")
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(host: str, command: tuple[str, ...], account: str, gpus: int, env: tuple[str, ...]) -> None:
    """Open a shell on HOST, or run COMMAND there, with OpenSSH through the gateway.

    Runs the real `ssh` with a gpuhop-written config (ProxyJump through the
    gateway, the gpuhop certificate, pinned host keys, keepalives every 5 s so
    a dead link ends the session within about 15 s). The exit status is ssh's.
    --gpus and --env reach the gateway through OpenSSH's SetEnv: the gateway
    leases that many GPUs (CUDA_VISIBLE_DEVICES) for the session's lifetime.
    Options go before HOST; everything after it is ssh's.

    \b
    gpuhop ssh --gpus 2 sg-a100-1
    gpuhop ssh --gpus 1 -e GPUHOP_ENV=base -e LANG=C sg-a100-1 nvidia-smi
    """
    settings = load()
    config = write_ssh_config(settings, ssh_ready(settings, host))
    variables = session_variables(gpus, [env_pair(e) for e in env])
    argv = ssh_argv(settings.ssh_binary, config, host, command, account, variables)
    try:
        os.execvp(argv[0], argv)  # noqa: S606  (ssh's exit status becomes ours)
    except OSError as exc:
        raise ClientError(f"cannot run {argv[0]}: {exc.strerror}") from None


@click.command("ssh-config")
@click.option("--install", is_flag=True, help="Include it from ~/.ssh/config (idempotent).")
@click.option("-q", "--quiet", is_flag=True, help="With --install: print nothing on success.")
def ssh_config(install: bool, quiet: bool) -> None:
    """Print (or --install) an OpenSSH config for the gateway and every host behind it.

    With it, plain `ssh HOST`, `scp`, `rsync` and VS Code Remote-SSH go
    through the gateway with the gpuhop certificate. --install keeps the block
    in a gpuhop-managed file and adds one `Include` line at the top of
    ~/.ssh/config. A `Host *` block that would override it gets a warning.
    """
    settings = load()
    profile = identity.ready(settings, refresh=True)
    managed = write_ssh_config(settings, profile)
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
