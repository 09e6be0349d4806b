"""``gpuhop-gateway admin …``: the directory (users, keys, roles, teams, data sets, budgets,
hosts) from the gateway machine, straight on storage.

The same ``DirectoryService`` the API uses checks, audits (actor
``local:<login>``) and writes each change; running gateways pick it up within
their poll interval. Whoever can read the config and the database is already
the gateway's operator, so no token is asked for. Output: a table, or
``--json``; a refused change is one line on stderr with exit code 2 (3 when
storage or the audit log is unavailable, 5 when a host presents another key
than the one given, 7 when it cannot be reached).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from gateway.cli.common import one_line_errors
from gateway.config.loader import Settings, load_settings
from gateway.errors import ConfigError, KeyMaterialError

T = TypeVar("T")

CONFIG = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="GPUHOP_CONFIG",
    required=True,
    help="Gateway config file (TOML). Env: GPUHOP_CONFIG.",
)
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def actor_name() -> str:
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local:unknown"


async def _with_service(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from gateway.audit.anchor import signer_for
    from gateway.audit.store import open_store
    from gateway.directory.service import DirectoryService
    from gateway.storage import open_storage

    url = settings.gateway.storage_url.get_secret_value()
    signer = await asyncio.to_thread(signer_for, settings.gateway)
    audit = await asyncio.to_thread(open_store, url, signer)  # first: it may create the file
    try:
        storage = await open_storage(url)
        try:
            service = DirectoryService(settings, storage.directory, audit)
            return await work(service)
        finally:
            await storage.close()
    finally:
        await audit.close()


def apply(config_path: Path, change: Any) -> None:
    """Make one change and say so on stdout."""
    from gateway.directory.service import Actor

    settings = load_settings(config_path)

    async def work(service: Any) -> int:
        view = await service.apply(change, Actor(actor_name()))
        return int(view.version)

    version = asyncio.run(_with_service(settings, work))
    click.echo(f"{change.event}: done (directory version {version})")


def view_of(config_path: Path) -> Any:
    """The directory as it is now (config and storage)."""
    settings = load_settings(config_path)

    async def work(service: Any) -> Any:
        return await service.load()

    return asyncio.run(_with_service(settings, work))


def key_text(value: str) -> str:
    """A public key line, or the contents of a ``.pub`` file named instead."""
    path = Path(value).expanduser()
    if "\n" not in value and len(value) < 4096 and path.is_file():
        return path.read_text().strip()
    return value.strip()


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def emit(
    as_json: bool, items: list[dict[str, Any]], header: list[str], rows: list[list[str]]
) -> None:
    if as_json:
        click.echo(json.dumps(items, indent=2))
    else:
        table(rows, header)


def _stamp(e: Any) -> dict[str, Any]:
    stamp = e.stamp
    return {
        "source": e.source,
        "created_at": stamp.created_at if stamp else None,
        "created_by": stamp.created_by if stamp else "",
    }


@click.group("admin")
def admin() -> None:
    """Users, keys, roles, teams, data sets, budgets and hosts kept in storage.

    Entries from the config file are listed as source `config` and cannot be
    changed here. Running gateways pick changes up within about 2 s.
    """


# -- users and keys ---------------------------------------------------------------


@admin.group()
def users() -> None:
    """Users: ls, add, rm."""


@users.command("ls")
@CONFIG
@JSON
@one_line_errors
def users_ls(config_path: Path, as_json: bool) -> None:
    """Every user, with team, roles, keys and source."""
    view = view_of(config_path)
    items = [
        {
            "name": u.name,
            "team": u.team,
            "roles": list(u.roles),
            "keys": [{"fingerprint": k.fingerprint, "key": k.line} for k in u.keys],
            **_stamp(u),
        }
        for u in view.users.values()
    ]
    rows = [
        [i["name"], i["team"] or "-", ",".join(i["roles"]) or "-", str(len(i["keys"])), i["source"]]
        for i in items
    ]
    emit(as_json, items, ["USER", "TEAM", "ROLES", "KEYS", "SOURCE"], rows)


@users.command("add")
@CONFIG
@click.argument("name")
@click.option("--team", default="", help="A declared team.")
@click.option("--role", "roles", multiple=True, help="Role to grant; repeatable.")
@click.option("--key", "keys", multiple=True, help="Public key line or .pub file; repeatable.")
@one_line_errors
def users_add(
    config_path: Path, name: str, team: str, roles: tuple[str, ...], keys: tuple[str, ...]
) -> None:
    """Add user NAME (audited as admin.user.add)."""
    from gateway.directory.changes import AddUser

    apply(config_path, AddUser(name, team, roles, tuple(key_text(k) for k in keys)))


@users.command("rm")
@CONFIG
@click.argument("name")
@one_line_errors
def users_rm(config_path: Path, name: str) -> None:
    """Remove user NAME with their keys and grants; their live sessions end."""
    from gateway.directory.changes import RemoveUser

    apply(config_path, RemoveUser(name))


@admin.group()
def keys() -> None:
    """Users' public keys: add, rm."""


@keys.command("add")
@CONFIG
@click.argument("user")
@click.argument("key")
@one_line_errors
def keys_add(config_path: Path, user: str, key: str) -> None:
    """Register KEY (a public key line or .pub file) to USER."""
    from gateway.directory.changes import AddKey

    apply(config_path, AddKey(user, key_text(key)))


@keys.command("rm")
@CONFIG
@click.argument("user")
@click.argument("key")
@one_line_errors
def keys_rm(config_path: Path, user: str, key: str) -> None:
    """Unregister KEY (SHA256 fingerprint, key line or .pub file) from USER."""
    from gateway.directory.changes import RemoveKey
    from gateway.errors import KeyMaterialError
    from gateway.inventory.keys import parse_public_key

    text = key_text(key)
    if not text.startswith("SHA256:"):
        try:
            text = parse_public_key(text).fingerprint
        except KeyMaterialError as exc:
            raise ConfigError(f"KEY: not a fingerprint, key line or .pub file: {exc}") from None
    apply(config_path, RemoveKey(user, text))


# -- roles ------------------------------------------------------------------------


@admin.group()
def roles() -> None:
    """Roles: ls, add, rm, grant, revoke."""


@roles.command("ls")
@CONFIG
@JSON
@one_line_errors
def roles_ls(config_path: Path, as_json: bool) -> None:
    """Every role, what it grants and who holds it."""
    view = view_of(config_path)
    items = []
    for name, e in view.roles.items():
        holders = sorted(u.name for u in view.users.values() if name in u.roles)
        items.append({"role": e.config.model_dump(mode="json"), "granted_to": holders, **_stamp(e)})
    rows = [
        [
            i["role"]["name"],
            ",".join(i["role"]["hosts"]),
            ",".join(i["role"]["accounts"]) or "-",
            ",".join(i["role"]["modes"]),
            ",".join(i["granted_to"]) or "-",
            i["source"],
        ]
        for i in items
    ]
    emit(as_json, items, ["ROLE", "HOSTS", "ACCOUNTS", "MODES", "USERS", "SOURCE"], rows)


@roles.command("add")
@CONFIG
@click.argument("name")
@click.option("--hosts", "hosts", multiple=True, required=True, help="Host selector; repeatable.")
@click.option("--account", "accounts", multiple=True, help="Remote account; repeatable.")
@click.option("--mode", "modes", multiple=True, type=click.Choice(["passthrough", "recorded"]))
@click.option("--max-gpus", type=click.IntRange(min=0), default=0)
@click.option(
    "--forwarding", is_flag=True, help="Allow editor port forwards (needs --forward-port)."
)
@click.option(
    "--forward-port", "forward_ports", multiple=True, help="Port or LOW-HIGH range; repeatable."
)
@click.option(
    "--agent-forwarding", is_flag=True, help="Allow ssh -A (relayed per session, audited)."
)
@click.option("--remote-forwarding", is_flag=True, help="Allow ssh -R on the forward ports.")
@one_line_errors
def roles_add(
    config_path: Path,
    name: str,
    hosts: tuple[str, ...],
    accounts: tuple[str, ...],
    modes: tuple[str, ...],
    max_gpus: int,
    forwarding: bool,
    forward_ports: tuple[str, ...],
    agent_forwarding: bool,
    remote_forwarding: bool,
) -> None:
    """Add role NAME, as a [[roles]] entry would declare it."""
    from gateway.config.directory import RoleConfig
    from gateway.directory.changes import AddRole
    from gateway.directory.view import validated

    spec: dict[str, Any] = {
        "name": name,
        "hosts": hosts,
        "accounts": accounts,
        "max_gpus": max_gpus,
        "forwarding": forwarding,
        "forward_ports": [int(p) if p.strip().isdigit() else p for p in forward_ports],
        "agent_forwarding": agent_forwarding,
        "remote_forwarding": remote_forwarding,
    }
    if modes:
        spec["modes"] = modes
    apply(config_path, AddRole(validated(RoleConfig, **spec)))


@roles.command("rm")
@CONFIG
@click.argument("name")
@one_line_errors
def roles_rm(config_path: Path, name: str) -> None:
    """Remove role NAME (refused while someone holds it)."""
    from gateway.directory.changes import RemoveRole

    apply(config_path, RemoveRole(name))


@roles.command("grant")
@CONFIG
@click.argument("user")
@click.argument("role")
@one_line_errors
def roles_grant(config_path: Path, user: str, role: str) -> None:
    """Grant ROLE to USER."""
    from gateway.directory.changes import Grant

    apply(config_path, Grant(user, role))


@roles.command("revoke")
@CONFIG
@click.argument("user")
@click.argument("role")
@one_line_errors
def roles_revoke(config_path: Path, user: str, role: str) -> None:
    """Revoke ROLE from USER."""
    from gateway.directory.changes import Revoke

    apply(config_path, Revoke(user, role))


# -- teams, data sets, budgets ------------------------------------------------------


@admin.group()
def teams() -> None:
    """Teams: ls, add, rm."""


@teams.command("ls")
@CONFIG
@JSON
@one_line_errors
def teams_ls(config_path: Path, as_json: bool) -> None:
    view = view_of(config_path)
    items = [{"name": t.name, "members": list(t.members), **_stamp(t)} for t in view.teams.values()]
    rows = [[i["name"], ",".join(i["members"]) or "-", i["source"]] for i in items]
    emit(as_json, items, ["TEAM", "MEMBERS", "SOURCE"], rows)


@teams.command("add")
@CONFIG
@click.argument("name")
@one_line_errors
def teams_add(config_path: Path, name: str) -> None:
    from gateway.directory.changes import AddTeam

    apply(config_path, AddTeam(name))


@teams.command("rm")
@CONFIG
@click.argument("name")
@one_line_errors
def teams_rm(config_path: Path, name: str) -> None:
    from gateway.directory.changes import RemoveTeam

    apply(config_path, RemoveTeam(name))


@admin.group()
def datasets() -> None:
    """Data sets and where they may be processed: ls, add, rm."""


@datasets.command("ls")
@CONFIG
@JSON
@one_line_errors
def datasets_ls(config_path: Path, as_json: bool) -> None:
    view = view_of(config_path)
    items = [
        {"dataset": e.config.model_dump(mode="json"), **_stamp(e)} for e in view.datasets.values()
    ]
    rows = [
        [
            i["dataset"]["name"],
            ",".join(i["dataset"]["regions"]) or "-",
            ",".join(i["dataset"]["countries"]) or "-",
            i["source"],
        ]
        for i in items
    ]
    emit(as_json, items, ["DATASET", "REGIONS", "COUNTRIES", "SOURCE"], rows)


@datasets.command("add")
@CONFIG
@click.argument("name")
@click.option("--region", "regions", multiple=True, help="Region it may be processed in.")
@click.option("--country", "countries", multiple=True, help="Country (ISO alpha-2) likewise.")
@one_line_errors
def datasets_add(
    config_path: Path, name: str, regions: tuple[str, ...], countries: tuple[str, ...]
) -> None:
    from gateway.config.directory import DatasetConfig
    from gateway.directory.changes import AddDataset
    from gateway.directory.view import validated

    spec = validated(DatasetConfig, name=name, regions=regions, countries=countries)
    apply(config_path, AddDataset(spec))


@datasets.command("rm")
@CONFIG
@click.argument("name")
@one_line_errors
def datasets_rm(config_path: Path, name: str) -> None:
    from gateway.directory.changes import RemoveDataset

    apply(config_path, RemoveDataset(name))


def _owner(user: str, team: str) -> tuple[str, str]:
    if bool(user) == bool(team):
        raise ConfigError("give exactly one of --user or --team")
    return ("user", user) if user else ("team", team)


@admin.group()
def budgets() -> None:
    """Spending limits per user or team: ls, set, rm."""


@budgets.command("ls")
@CONFIG
@JSON
@one_line_errors
def budgets_ls(config_path: Path, as_json: bool) -> None:
    view = view_of(config_path)
    items = [
        {"budget": e.config.model_dump(mode="json"), **_stamp(e)} for e in view.budgets.values()
    ]
    rows = []
    for i in items:
        b = i["budget"]
        owner = f"user {b['user']}" if b["user"] else f"team {b['team']}"
        rows.append([owner, _money(b["daily"]), _money(b["monthly"]), i["source"]])
    emit(as_json, items, ["OWNER", "DAILY", "MONTHLY", "SOURCE"], rows)


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@budgets.command("set")
@CONFIG
@click.option("--user", default="")
@click.option("--team", default="")
@click.option("--daily", type=float, default=None, help="USD per UTC day.")
@click.option("--monthly", type=float, default=None, help="USD per UTC month.")
@one_line_errors
def budgets_set(
    config_path: Path, user: str, team: str, daily: float | None, monthly: float | None
) -> None:
    """Set (or replace) the limits of one user or one team."""
    from gateway.config.directory import BudgetConfig
    from gateway.directory.changes import SetBudget
    from gateway.directory.view import validated

    kind, owner = _owner(user, team)
    spec = validated(BudgetConfig, **{kind: owner}, daily=daily, monthly=monthly)
    apply(config_path, SetBudget(spec))


@budgets.command("rm")
@CONFIG
@click.option("--user", default="")
@click.option("--team", default="")
@one_line_errors
def budgets_rm(config_path: Path, user: str, team: str) -> None:
    from gateway.directory.changes import RemoveBudget

    kind, owner = _owner(user, team)
    apply(config_path, RemoveBudget("user" if kind == "user" else "team", owner))


# -- hosts --------------------------------------------------------------------------


@admin.group()
def hosts() -> None:
    """Hosts added at run time: ls, add (host key fetched and confirmed, or pinned), rm."""


@hosts.command("ls")
@CONFIG
@JSON
@one_line_errors
def hosts_ls(config_path: Path, as_json: bool) -> None:
    view = view_of(config_path)
    items = [{"host": e.config.model_dump(mode="json"), **_stamp(e)} for e in view.hosts.values()]
    rows = [
        [
            i["host"]["name"],
            i["host"]["region"],
            f"{i['host']['address']}:{i['host']['port']}",
            i["source"],
        ]
        for i in items
    ]
    emit(as_json, items, ["HOST", "REGION", "ADDRESS", "SOURCE"], rows)


@hosts.command("add")
@CONFIG
@click.argument("name")
@click.option("--region", required=True)
@click.option("--address", required=True)
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True)
@click.option("--host-key", default="", help="Pin this key line (no connection is made).")
@click.option("--fingerprint", default="", help="SHA256:... the host must present.")
@click.option("--yes", is_flag=True, help="Pin whatever key the host presents now.")
@click.option("--gpu-model", default="")
@click.option("--gpu-count", type=click.IntRange(min=0), default=0)
@click.option("--price", "price_per_gpu_hour", type=float, default=0.0, help="Per GPU-hour.")
@click.option("--egress", "egress_per_gb", type=float, default=0.0, help="Per GB out.")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE; repeatable.")
@one_line_errors
def hosts_add(
    config_path: Path,
    name: str,
    host_key: str,
    fingerprint: str,
    yes: bool,
    labels: tuple[str, ...],
    **fields: Any,
) -> None:
    """Add host NAME. Without --host-key the gateway fetches the host's key, then
    pins it if it matches --fingerprint, if --yes is given, or if you confirm it."""
    from gateway.config.directory import HostConfig
    from gateway.directory.changes import AddHost
    from gateway.directory.view import validated
    from gateway.inventory.hostscan import scan_host_key

    if host_key and fingerprint:
        raise ConfigError("give --host-key or --fingerprint, not both")
    if not host_key:
        found = asyncio.run(scan_host_key(fields["address"], fields["port"]))
        host_key = confirm_key(found.line, found.fingerprint, fingerprint, yes, name)
    spec = validated(HostConfig, name=name, host_key=host_key, labels=_labels(labels), **fields)
    apply(config_path, AddHost(spec))


def _labels(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--label wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def confirm_key(line: str, found: str, expected: str, yes: bool, name: str) -> str:
    """The key to pin, once the operator has agreed to it; ``ConfigError`` otherwise."""
    if expected:
        if expected.strip() != found:
            raise KeyMaterialError(
                f"host key mismatch: the host presents {found}, not {expected.strip()}; not added"
            )
        return line
    if yes:
        return line
    if not sys.stdin.isatty():
        raise ConfigError(
            f"{name} presents {found}; confirm with --fingerprint {found} "
            "(compare with `ssh-keygen -lf` on the host), or --yes"
        )
    click.echo(f"{name} presents host key {found}", err=True)
    if not click.confirm("Pin this key?", default=False, err=True):
        raise ConfigError("not added: host key not confirmed")
    return line


@hosts.command("rm")
@CONFIG
@click.argument("name")
@one_line_errors
def hosts_rm(config_path: Path, name: str) -> None:
    """Remove host NAME (refused while a role names it); live sessions on it end."""
    from gateway.directory.changes import RemoveHost

    apply(config_path, RemoveHost(name))
