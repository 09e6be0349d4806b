"""``gpuhop env``: build environments locally, push them to hosts, compare what each holds."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import click
from rich.markup import escape

from client import credentials, identity
from client.commands.common import DOCKER_OPTION
from client.commands.common import settings as load
from client.envs.build import build_env, list_envs
from client.envs.engine import DockerEngine, connect
from client.envs.remote import env_status, push_via_gateway
from client.envs.spec import resolve
from client.envs.sync import Progress
from client.errors import SyncFailed
from client.services.gateway import gateway_connector
from client.services.images import image_ref
from client.tables import Column, print_table
from client.tui.format import size

ENV_COLUMNS = (Column(""), Column("NAME"), Column("FINGERPRINT"), Column("SIZE", right=True))
PUSH_COLUMNS = (
    Column("HOST"),
    Column("STATUS"),
    Column("SENT", right=True),
    Column("ERROR", fill=True),
)
STATUS_COLUMNS = (
    Column("HOST"),
    Column("NAME"),
    Column("STATE"),
    Column("THERE"),
    Column("LOCAL"),
    Column("DETAIL", fill=True),
)


@click.group()
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


@env.command("build")
@_IMAGES_OPTION
@DOCKER_OPTION
@click.option("--force", is_flag=True, help="Build even when the fingerprint is unchanged.")
@click.option("-q", "--quiet", is_flag=True, help="No build progress.")
@click.argument("name")
def env_build(images_dir: Path, docker_url: str, force: bool, quiet: bool, name: str) -> None:
    """Build NAME (a directory under --images, or a project with .devcontainer/)."""
    spec = resolve(images_dir, name)
    client = connect(docker_url)
    progress = None if quiet else (lambda line: click.echo(line, err=True))
    built = build_env(client, spec, progress, force=force)
    state = "unchanged, reused" if built.reused else "built"
    click.echo(f"{built.ref} {built.fingerprint} {built.image_id[:19]} ({state})")


@env.command("ls")
@DOCKER_OPTION
@click.option("--json", "as_json", is_flag=True)
def env_ls(docker_url: str, as_json: bool) -> None:
    """Built environments: names, fingerprints, sizes."""
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
    print_table(
        ENV_COLUMNS,
        (
            ("*" if i.current else "", escape(i.name), i.fingerprint[:19], size(i.size))
            for i in images
        ),
    )


@env.command("push")
@DOCKER_OPTION
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
    ref = image_ref(name)
    local = DockerEngine(connect(docker_url), "local")
    connect_gateway = gateway_connector(load())

    def show(p: Progress) -> None:
        total = f" of ~{size(p.total)}" if p.total else ""
        end = "\n" if p.done else ""
        click.echo(
            f"\rgpuhop: {ref}: {size(p.sent)}{total}, {size(int(p.rate))}/s   {end}",
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
        rows = (
            (escape(t.target), t.status, size(t.bytes_sent), escape(t.error or ""))
            for t in report.targets
        )
        print_table(PUSH_COLUMNS, rows)
        click.echo(
            f"gpuhop: {size(report.link_bytes)} over your link in {report.seconds:.1f} s",
            err=True,
        )
    if report.failed:
        lines = "; ".join(f"{t.target}: {t.error}" for t in report.failed)
        raise SyncFailed(f"push of {ref} failed on {len(report.failed)} host(s): {lines}")


@env.command("status")
@DOCKER_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
@click.argument("hosts", nargs=-1)
def env_status_cmd(docker_url: str, as_json: bool, hosts: tuple[str, ...]) -> None:
    """Each host's environments against the local builds: current, drift, missing.

    Without HOSTS, every host the gateway lets you use.
    """
    settings = load()
    if not hosts:
        creds = credentials.resolve(settings)
        with identity.open_api(creds.url, creds.token, settings) as api:
            hosts = tuple(h.name for h in api.hosts() if h.allowed)
    local = list_envs(connect(docker_url))
    rows = asyncio.run(env_status(hosts, local, connect_gateway=gateway_connector(settings)))
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    if not rows:
        click.echo("no environments here or on " + ", ".join(hosts), err=True)
    print_table(
        STATUS_COLUMNS,
        (
            (
                escape(r.host),
                escape(r.name),
                r.state,
                r.remote_fingerprint[:19] or "-",
                r.local_fingerprint[:19] or "-",
                escape(r.detail),
            )
            for r in rows
        ),
    )
