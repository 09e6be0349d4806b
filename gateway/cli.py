"""``gpuhop-gateway``: run the gateway and administer it locally.

Every command maps a :class:`~gateway.errors.GatewayError` to one line on
stderr and its exit code; nothing prints a traceback for a bad input.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from client.durations import parse_duration
from gateway import __version__
from gateway.errors import ConfigError, GatewayError, KeyMaterialError
from gateway.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="GPUHOP_CONFIG",
    required=True,
    help="Gateway config file (TOML). Env: GPUHOP_CONFIG.",
)


def _fail(message: str, code: int) -> None:
    click.echo(f"gpuhop-gateway: error: {message}", err=True)
    sys.exit(code)


def one_line_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GatewayError as exc:
            _fail(str(exc), exc.exit_code)
        except OSError as exc:
            _fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), 1)
        return None

    return wrapper  # type: ignore[return-value]


def _load(config_path: Path) -> Settings:
    settings = load_settings(config_path)
    from gateway.logs import configure

    configure(settings.gateway.log_level, settings.gateway.log_format)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gpuhop-gateway")
def main() -> None:
    """gpuhop gateway: one SSH entry point, one policy, an audit log, for every GPU region."""


@main.command()
@CONFIG_OPTION
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Worker processes.")
@click.option("--listen-fd", type=int, default=None, hidden=True)
@click.option("--api-listen-fd", type=int, default=None, hidden=True)
@click.option(
    "--ready-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write {pid, ssh_port} as JSON here once listening (for scripts).",
)
@one_line_errors
def serve(
    config_path: Path,
    workers: int | None,
    listen_fd: int | None,
    api_listen_fd: int | None,
    ready_file: Path | None,
) -> None:
    """Run the gateway until SIGTERM, then drain sessions and stop."""
    from gateway.server import run_event_loop, serve, supervise

    settings = _load(config_path)
    n = workers or settings.gateway.workers
    if listen_fd is None and n > 1:
        sys.exit(supervise(config_path, settings, n, ready_file))
    sock = socket.socket(fileno=listen_fd) if listen_fd is not None else None
    api_sock = socket.socket(fileno=api_listen_fd) if api_listen_fd is not None else None
    run_event_loop(serve(settings, sock=sock, api_sock=api_sock, ready_file=ready_file))


@main.command("check-config")
@CONFIG_OPTION
@one_line_errors
def check_config(config_path: Path) -> None:
    """Validate a config file and print a summary."""
    settings = load_settings(config_path)
    inv = settings.inventory()
    click.echo(
        f"{config_path}: ok ({len(inv.regions)} regions, {len(inv.hosts)} hosts, "
        f"{len(inv.users)} users, {len(inv.roles)} roles)"
    )


@main.group()
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
    from gateway.keys import previous_keys, public_line, rotate_key

    g = load_settings(config_path).gateway
    path = g.user_ca_key if which == "user" else g.host_ca_key
    old = rotate_key(path, f"gpuhop {which} CA")
    keep = [path, *previous_keys(path, g.cert_max_validity_s + 300)]
    from gateway.keys import load_private_key

    click.echo(f"rotated {which} CA; old key kept as {old}", err=True)
    for p in keep:
        click.echo(public_line(load_private_key(p)))
    _reload(pid)


@main.group()
def hostkey() -> None:
    """The gateway's own SSH host key, and rotating it in two steps.

    \b
    1. stage:   make the next key; the gateway announces it to clients
                (OpenSSH UpdateHostKeys, gpuhop login) but keeps using the old one.
    2. promote: once clients have learned it, the next key replaces the old one
                for new connections; live sessions keep theirs.
    Each takes --pid to make the gateway reload at once (SIGHUP).
    """


def _reload(pid: int | None) -> None:
    import os
    import signal

    if pid is not None:
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            raise GatewayError(f"cannot signal gateway pid {pid}: {exc.strerror}") from None


@hostkey.command("show")
@CONFIG_OPTION
@one_line_errors
def hostkey_show(config_path: Path) -> None:
    """Print the host key in use, then the staged next key if there is one."""
    from gateway.keys import load_private_key, next_key_path, public_line

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
    from gateway.keys import ensure_private_key, public_line, stage_next_key

    path = load_settings(config_path).gateway.host_key
    current = ensure_private_key(path, "gpuhop gateway host key")
    staged = stage_next_key(path, "gpuhop gateway host key")
    click.echo(public_line(current))
    click.echo(public_line(staged))
    click.echo("staged; promote it once clients have learned it", err=True)
    _reload(pid)


@hostkey.command("promote")
@CONFIG_OPTION
@click.option("--pid", type=int, default=None, help="Signal this gateway (SIGHUP) to reload.")
@one_line_errors
def hostkey_promote(config_path: Path, pid: int | None) -> None:
    """Make the staged key the host key; print it. The old key is kept beside it."""
    from gateway.keys import load_private_key, promote_next_key, public_line

    path = load_settings(config_path).gateway.host_key
    old = promote_next_key(path)
    click.echo(public_line(load_private_key(path)))
    click.echo(f"promoted; the old key is kept as {old}", err=True)
    _reload(pid)


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
    from gateway.admindir import view_of
    from gateway.api.routes.certificates import certificate_validity
    from gateway.audit.store import open_store
    from gateway.keys import parse_public_key
    from gateway.models import Principal
    from gateway.policy.passthrough import host_principals, passthrough_agent_forwarding
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
        from gateway.audit.anchor import signer_for

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


@main.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@click.option("--database", default=None, help="Storage URL or SQLite path.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None)
@click.option(
    "--checkpoint-key",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Audit checkpoint key (private, or its .pub) that signs the chain "
    "(default: the config's audit_checkpoint_key).",
)
@click.option(
    "--anchor",
    "anchor_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Anchor file holding the newest signed head (default: the config's audit_anchor_file).",
)
@click.option("--no-anchor", is_flag=True, help="Check signatures only, not the anchor file.")
@click.option(
    "--expect-head", default=None, metavar="ID:HASH", help="Fail unless the chain holds this event."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result (and the head) as JSON.")
@one_line_errors
def audit_verify(
    database: str | None,
    config_path: Path | None,
    checkpoint_key: Path | None,
    anchor_path: Path | None,
    no_anchor: bool,
    expect_head: str | None,
    as_json: bool,
) -> None:
    """Walk the hash chain and check it against its signed checkpoints and anchor.

    Exit 0 when it holds; else one line naming the first problem: a broken link,
    an event rewritten, events deleted from the end, or events appended without
    the audit key. Without --config or --checkpoint-key only the links are checked.
    """
    from gateway.audit.anchor import TrustedKeys, anchors_for
    from gateway.audit.checkpoint import parse_head
    from gateway.audit.store import verify_database
    from gateway.errors import ChainBroken

    g = load_settings(config_path).gateway if config_path is not None else None
    if database is None:
        if g is None:
            raise ConfigError("give --database URL or --config FILE")
        database = g.storage_url.get_secret_value()
    try:
        expect = parse_head(expect_head) if expect_head is not None else None
    except ValueError as exc:
        raise ConfigError(f"--expect-head: {exc}") from None
    key_path = checkpoint_key or (g.audit_checkpoint_key if g is not None else None)
    if anchor_path is None and g is not None and not no_anchor:
        anchor_path = g.audit_anchor_file
    anchors = None
    if key_path is not None:
        anchor_file = None if no_anchor else anchor_path
        anchors = anchors_for(
            TrustedKeys.from_file(key_path), anchor_file, expect, require_anchor=True
        )
    elif expect is not None or anchor_path is not None:
        raise ConfigError("--expect-head and --anchor need --config or --checkpoint-key")
    result = verify_database(database, anchors)
    if as_json:
        anchor = anchors.anchor if anchors is not None else None
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "count": result.count,
                    "first_broken": result.first_broken,
                    "reason": result.reason,
                    "head": {"id": result.head_id, "hash": result.head_hash},
                    "signed_through": result.signed_through,
                    "anchor": None
                    if anchor is None
                    else {"id": anchor.event_id, "hash": anchor.hash},
                }
            )
        )
    if not result.ok:
        raise ChainBroken(
            f"audit chain broken at event {result.first_broken}: {result.reason}",
            result.first_broken,
        )
    if anchors is None:
        click.echo(
            "gpuhop-gateway: note: checkpoints not checked (give --config or --checkpoint-key)",
            err=True,
        )
    if not as_json:
        signed = (
            "" if result.signed_through is None else f", signed through {result.signed_through}"
        )
        head = f"{result.head_id}:{result.head_hash}"
        click.echo(f"audit chain ok: {result.count} events, head {head}{signed}")


@main.group()
def token() -> None:
    """API tokens (for the HTTP API and the gpuhop command)."""


@token.command("create")
@CONFIG_OPTION
@click.option("--user", "user_name", required=True)
@click.option(
    "--scope",
    type=click.Choice(["user", "ci", "admin", "metrics"]),
    default="user",
    show_default=True,
)
@click.option("--name", default="cli", show_default=True)
@click.option("--ttl", default="30d", show_default=True, help="e.g. 12h, 30d")
@one_line_errors
def token_create(config_path: Path, user_name: str, scope: str, name: str, ttl: str) -> None:
    """Create an API token; prints the secret (shown once) on stdout."""
    from gateway.api.bootstrap import create_token_blocking
    from gateway.storage import Scope

    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        raise ConfigError(f"--ttl: {exc}") from exc
    created = create_token_blocking(
        load_settings(config_path), user=user_name, scope=Scope(scope), name=name, ttl_s=seconds
    )
    click.echo(created.secret)
    click.echo(f"token {created.token.id} for {user_name} ({scope})", err=True)


@main.group()
def db() -> None:
    """Database schema (migrations, SQLite or PostgreSQL)."""


@db.command("upgrade")
@CONFIG_OPTION
@one_line_errors
def db_upgrade(config_path: Path) -> None:
    """Migrate the storage database to this gpuhop's schema (safe with several replicas)."""
    from gateway.storage.migrate import upgrade

    before, after = upgrade(load_settings(config_path).gateway.storage_url.get_secret_value())
    click.echo(f"database schema at revision {after} (was {before or 'empty or pre-migration'})")


@db.command("current")
@CONFIG_OPTION
@one_line_errors
def db_current(config_path: Path) -> None:
    """Print the database's schema revision."""
    from gateway.storage.migrate import current

    rev = current(load_settings(config_path).gateway.storage_url.get_secret_value())
    click.echo(rev or "empty")


def _attach_admin_commands() -> None:
    from gateway.admincli import (
        audit_export,
        audit_ls,
        audit_replay,
        audit_show,
        audit_verify_export,
    )
    from gateway.admindir import admin

    for command in (audit_ls, audit_show, audit_export, audit_verify_export, audit_replay):
        audit.add_command(command)
    main.add_command(admin)


_attach_admin_commands()


if __name__ == "__main__":
    main()
