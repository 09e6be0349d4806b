"""``gpuhop-gateway admin …``: the directory (users, keys, roles, teams, data sets, budgets,
hosts) from the gateway machine, straight on storage.

The same ``DirectoryService`` the API uses checks, audits (actor
``local:<login>``) and writes each change; running gateways pick it up within
their poll interval. Whoever can read the config and the database is already
the gateway's operator, so no token is asked for. Output: a table, or
``--json``. The commands are those of ``client.admintable`` (the same as
``gpuhop admin``); here each one makes its ``gateway.config.changes`` value.
A refused change is one line on stderr with the exit code ``gpuhop admin``
gives it: 65 refused (invalid, duplicate, in use, config-managed, host key
mismatch), 66 no such entry, 2 bad flags; 3 when storage or the audit log is
unavailable, 7 when a host cannot be reached.
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

from client import admintable
from client.admintable import Handler, key_text, money, owner, role_spec
from gateway.cli.common import one_line_errors
from gateway.config import changes as ch
from gateway.config.directory import BudgetConfig, DatasetConfig, HostConfig, RoleConfig
from gateway.config.loader import Settings, load_settings
from gateway.errors import ConfigError, DirectoryInvalid
from gateway.services.directory import key_fingerprint
from gateway.services.directoryview import validated

T = TypeVar("T")

CONFIG = click.Option(
    ["--config", "config_path"],
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="GPUHOP_CONFIG",
    required=True,
    help="Gateway config file (TOML). Env: GPUHOP_CONFIG.",
)


def actor_name() -> str:
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local:unknown"


async def _with_service(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from gateway.adapters.audit.anchor import signer_for
    from gateway.adapters.audit.store import open_store
    from gateway.adapters.storage import open_storage
    from gateway.services.directory import DirectoryService

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
    from gateway.services.directory import Actor

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


def _stamp(e: Any) -> dict[str, Any]:
    stamp = e.stamp
    return {
        "source": e.source,
        "created_at": stamp.created_at if stamp else None,
        "created_by": stamp.created_by if stamp else "",
    }


def _emit(group: str, as_json: bool, items: list[dict[str, Any]], rows: list[list[str]]) -> None:
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    header = next(c.columns for c in admintable.commands() if c.path == (group, "ls"))
    admintable.render(header, rows)


def users_ls(config_path: Path, as_json: bool) -> None:
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
    _emit("users", as_json, items, rows)


def roles_ls(config_path: Path, as_json: bool) -> None:
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
    _emit("roles", as_json, items, rows)


def teams_ls(config_path: Path, as_json: bool) -> None:
    view = view_of(config_path)
    items = [{"name": t.name, "members": list(t.members), **_stamp(t)} for t in view.teams.values()]
    rows = [[i["name"], ",".join(i["members"]) or "-", i["source"]] for i in items]
    _emit("teams", as_json, items, rows)


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
    _emit("datasets", as_json, items, rows)


def budgets_ls(config_path: Path, as_json: bool) -> None:
    view = view_of(config_path)
    items = [
        {"budget": e.config.model_dump(mode="json"), **_stamp(e)} for e in view.budgets.values()
    ]
    rows = []
    for i in items:
        b = i["budget"]
        who = f"user {b['user']}" if b["user"] else f"team {b['team']}"
        rows.append([who, money(b["daily"]), money(b["monthly"]), i["source"]])
    _emit("budgets", as_json, items, rows)


def budgets_set(
    config_path: Path, user: str, team: str, daily: float | None, monthly: float | None
) -> None:
    kind, name = owner(user, team)
    spec = validated(BudgetConfig, **{kind: name}, daily=daily, monthly=monthly)
    apply(config_path, ch.SetBudget(spec))


def budgets_rm(config_path: Path, user: str, team: str) -> None:
    kind, name = owner(user, team)
    apply(config_path, ch.RemoveBudget("user" if kind == "user" else "team", name))


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
    _emit("hosts", as_json, items, rows)


def hosts_add(
    config_path: Path,
    name: str,
    host_key: str,
    fingerprint: str,
    yes: bool,
    labels: tuple[str, ...],
    **fields: Any,
) -> None:
    from gateway.adapters.hosts.hostscan import scan_host_key

    if host_key and fingerprint:
        raise ConfigError("give --host-key or --fingerprint, not both")
    if not host_key:
        found = asyncio.run(scan_host_key(fields["address"], fields["port"]))
        host_key = confirm_key(found.line, found.fingerprint, fingerprint, yes, name)
    label_map = admintable.labels(labels)
    spec = validated(HostConfig, name=name, host_key=host_key, labels=label_map, **fields)
    apply(config_path, ch.AddHost(spec))


def confirm_key(line: str, found: str, expected: str, yes: bool, name: str) -> str:
    """The key to pin, once the operator has agreed to it; ``ConfigError`` otherwise."""
    if expected:
        if expected.strip() != found:
            raise DirectoryInvalid(
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


def _applies(make: Callable[..., ch.Change]) -> Handler:
    """A handler that makes one change from the command's flags and applies it."""

    def handler(config_path: Path, **flags: Any) -> None:
        apply(config_path, make(**flags))

    return handler


HANDLERS: dict[tuple[str, str], Handler] = {
    ("users", "ls"): users_ls,
    ("users", "add"): _applies(
        lambda name, team, roles, keys: ch.AddUser(
            name, team, roles, tuple(key_text(k) for k in keys)
        )
    ),
    ("users", "rm"): _applies(ch.RemoveUser),
    ("keys", "add"): _applies(lambda user, key: ch.AddKey(user, key_text(key))),
    ("keys", "rm"): _applies(lambda user, key: ch.RemoveKey(user, key_fingerprint(key_text(key)))),
    ("roles", "ls"): roles_ls,
    ("roles", "add"): _applies(lambda **f: ch.AddRole(validated(RoleConfig, **role_spec(f)))),
    ("roles", "rm"): _applies(ch.RemoveRole),
    ("roles", "grant"): _applies(ch.Grant),
    ("roles", "revoke"): _applies(ch.Revoke),
    ("teams", "ls"): teams_ls,
    ("teams", "add"): _applies(ch.AddTeam),
    ("teams", "rm"): _applies(ch.RemoveTeam),
    ("datasets", "ls"): datasets_ls,
    ("datasets", "add"): _applies(
        lambda name, regions, countries: ch.AddDataset(
            validated(DatasetConfig, name=name, regions=regions, countries=countries)
        )
    ),
    ("datasets", "rm"): _applies(ch.RemoveDataset),
    ("budgets", "ls"): budgets_ls,
    ("budgets", "set"): budgets_set,
    ("budgets", "rm"): budgets_rm,
    ("hosts", "ls"): hosts_ls,
    ("hosts", "add"): hosts_add,
    ("hosts", "rm"): _applies(ch.RemoveHost),
}


def _errors(func: Handler) -> Handler:
    """One-line errors, the table's flag checks among them (as ConfigError: exit 2)."""
    return one_line_errors(admintable.flag_errors_as(ConfigError)(func))


admin = admintable.build(
    "Users, keys, roles, teams, data sets, budgets and hosts kept in storage.\n\n"
    "Entries from the config file are listed as source `config` and cannot be\n"
    "changed here. Running gateways pick changes up within about 2 s.",
    HANDLERS,
    common=[CONFIG],
    wrap=_errors,
)
