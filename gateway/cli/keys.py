"""``gpuhop-gateway ca|hostkey``: the gateway's certificate authorities and its host key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from client.durations import parse_duration
from gateway.cli.common import CONFIG_OPTION, one_line_errors, reload
from gateway.config.loader import load_settings
from gateway.errors import ConfigError, KeyMaterialError


@click.group()
def ca() -> None:
    """The gateway's user certificate authority."""


@ca.command("show")
@CONFIG_OPTION
@one_line_errors
def ca_show(config_path: Path) -> None:
    """Print what hosts put in TrustedUserCAKeys: the user CA keys, current first, then
    the upstream CA (the gateway's own logins). See docs/hosts.md."""
    from gateway.server import load_upstream_ca, load_user_ca

    settings = load_settings(config_path)
    for line in load_user_ca(settings).trusted_lines_current_first():
        click.echo(line)
    click.echo(load_upstream_ca(settings).public_line)


@ca.command("rotate")
@CONFIG_OPTION
@click.argument("which", type=click.Choice(["user", "host"]))
@click.option("--pid", type=int, default=None, help="Signal this gateway (SIGHUP) to reload.")
@one_line_errors
def ca_rotate(config_path: Path, which: str, pid: int | None) -> None:
    """Replace the user or host CA with a new key; the old one keeps verifying.

    New certificates come from the new CA at once (after a reload: SIGHUP, or
    --pid); the old user CA stays trusted for cert_max_validity_s so certificates
    it signed keep working until they expire. Put every line of the printed
    trust file on hosts (TrustedUserCAKeys) or clients (@cert-authority).
    """
    from gateway.adapters.keys import previous_keys, public_line, rotate_key

    g = load_settings(config_path).gateway
    path = g.user_ca_key if which == "user" else g.host_ca_key
    old = rotate_key(path, f"gpuhop {which} CA")
    keep = [path, *previous_keys(path, g.cert_max_validity_s + 300)]
    from gateway.adapters.keys import load_private_key

    click.echo(f"rotated {which} CA; old key kept as {old}", err=True)
    for p in keep:
        click.echo(public_line(load_private_key(p)))
    reload(pid)


@click.group()
def hostkey() -> None:
    """The gateway's own SSH host key, and rotating it in two steps.

    \b
    1. stage:   make the next key; the gateway announces it to clients
                (OpenSSH UpdateHostKeys, gpuhop login) but keeps using the old one.
    2. promote: once clients have learned it, the next key replaces the old one
                for new connections; live sessions keep theirs.
    Each takes --pid to make the gateway reload at once (SIGHUP).
    """


@hostkey.command("show")
@CONFIG_OPTION
@one_line_errors
def hostkey_show(config_path: Path) -> None:
    """Print the host key in use, then the staged next key if there is one."""
    from gateway.adapters.keys import load_private_key, next_key_path, public_line

    path = load_settings(config_path).gateway.host_key
    for p in (path, next_key_path(path)):
        if p.exists():
            click.echo(public_line(load_private_key(p)))


@hostkey.command("stage")
@CONFIG_OPTION
@click.option("--pid", type=int, default=None, help="Signal this gateway (SIGHUP) to reload.")
@one_line_errors
def hostkey_stage(config_path: Path, pid: int | None) -> None:
    """Make the next host key (or keep the one already staged) and print both keys."""
    from gateway.adapters.keys import ensure_private_key, public_line, stage_next_key

    path = load_settings(config_path).gateway.host_key
    current = ensure_private_key(path, "gpuhop gateway host key")
    staged = stage_next_key(path, "gpuhop gateway host key")
    click.echo(public_line(current))
    click.echo(public_line(staged))
    click.echo("staged; promote it once clients have learned it", err=True)
    reload(pid)


@hostkey.command("promote")
@CONFIG_OPTION
@click.option("--pid", type=int, default=None, help="Signal this gateway (SIGHUP) to reload.")
@one_line_errors
def hostkey_promote(config_path: Path, pid: int | None) -> None:
    """Make the staged key the host key; print it. The old key is kept beside it."""
    from gateway.adapters.keys import load_private_key, promote_next_key, public_line

    path = load_settings(config_path).gateway.host_key
    old = promote_next_key(path)
    click.echo(public_line(load_private_key(path)))
    click.echo(f"promoted; the old key is kept as {old}", err=True)
    reload(pid)


@ca.command("sign")
@CONFIG_OPTION
@click.option("--user", "user_name", required=True, help="gpuhop user the certificate is for.")
@click.option(
    "--pubkey",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help="The user's public key file.",
)
@click.option("--validity", default=None, help="e.g. 30m, 8h (default from config).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None)
@one_line_errors
def ca_sign(
    config_path: Path, user_name: str, pubkey: Path, validity: str | None, out: Path | None
) -> None:
    """Sign a short-lived certificate for a registered user's key.

    Principals are the user's name and ACCOUNT@HOST for each (host, account) pair
    their roles grant in passthrough; such a certificate is capped at
    cert_passthrough_max_validity_s.
    """
    from gateway.adapters.audit.store import open_store
    from gateway.adapters.keys import parse_public_key
    from gateway.cli.directory import view_of
    from gateway.domain.models import Principal
    from gateway.domain.policy.passthrough import host_principals, passthrough_agent_forwarding
    from gateway.edges.http.routes.certificates import certificate_validity
    from gateway.server import load_user_ca

    settings = load_settings(config_path)
    g = settings.gateway
    inv = view_of(config_path).inventory()  # config users and those admins added
    user = inv.user(user_name)
    if user is None:
        raise ConfigError(f"unknown user {user_name!r}")
    try:
        seconds = int(parse_duration(validity)) if validity else g.cert_default_validity_s
    except ValueError as exc:
        raise ConfigError(f"--validity: {exc}") from exc
    if not 0 < seconds <= g.cert_max_validity_s:
        raise ConfigError(f"--validity: must be between 1s and {g.cert_max_validity_s}s")
    key = parse_public_key(pubkey.read_text())
    principal = Principal(user=user.name, roles=inv.roles_of(user), team=user.team)
    scoped = host_principals(principal, inv.hosts)
    seconds = certificate_validity(seconds, scoped, g)
    agent = passthrough_agent_forwarding(principal, inv.hosts)
    issued = load_user_ca(settings).sign(
        key, user=user.name, accounts=scoped, validity_s=seconds, permit_agent_forwarding=agent
    )
    target = out or pubkey.with_name(pubkey.name.removesuffix(".pub") + "-cert.pub")
    try:
        target.write_text(issued.openssh_line() + "\n")
    except OSError as exc:
        raise KeyMaterialError(f"{target}: cannot write certificate: {exc.strerror}") from exc

    async def record() -> None:
        from gateway.adapters.audit.anchor import signer_for

        store = open_store(g.storage_url.get_secret_value(), signer_for(g))
        try:
            await store.append(
                "cert.issued",
                user.name,
                {
                    "user": user.name,
                    "key_id": issued.key_id,
                    "serial": issued.serial,
                    "principals": list(issued.principals),
                    "valid_after": issued.valid_after,
                    "valid_before": issued.valid_before,
                    "fingerprint": key.get_fingerprint(),
                },
            )
        finally:
            await store.close()

    asyncio.run(record())
    click.echo(f"{target} (key id {issued.key_id}, principals {','.join(issued.principals)})")
