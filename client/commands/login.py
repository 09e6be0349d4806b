"""``gpuhop login`` and ``gpuhop logout``: the token in the keyring, the SSH certificate."""

from __future__ import annotations

import getpass
import sys

import click

from client import credentials, identity
from client.api.clients import Client
from client.commands.common import settings as load
from client.errors import NoKeyring, UsageError
from client.settings import Secret, is_loopback_url, normalize_url


@click.command()
@click.argument("gateway_url")
@click.option("--token-stdin", is_flag=True, help="Read the API token from stdin (scripts).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def login(gateway_url: str, token_stdin: bool, quiet: bool) -> None:
    """Log in to a gateway with an API token (kept in the OS keyring).

    Verifies the token, stores it, creates the gpuhop SSH key if needed, and
    fetches a short-lived SSH certificate and the gateway's host keys. On CI,
    skip this and set GPUHOP_GATEWAY and GPUHOP_TOKEN instead.
    """
    settings = load()
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


@click.command()
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def logout(quiet: bool) -> None:
    """Forget the stored token and certificate (the SSH key stays)."""
    settings = load()
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
