"""``gpuhop admin …``: the gateway's directory over its API, with an admin token.

Users, keys, roles, teams, data sets, budgets and hosts. Every change is
checked, audited and applied by the gateway (``/v1/admin``); entries from the
gateway's config file are listed as source ``config`` and refused for change.
Exit codes: 65 a refused change (invalid, duplicate, in use, config-managed),
66 no such entry, 77 not an admin token, 75 a host that could not be reached,
2 bad flags (and a host key not confirmed).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from client.errors import AdminRefused, UsageError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from client.adminmodels import HostScan


@contextmanager
def _api() -> Iterator[Any]:
    from client import credentials
    from client.api.clients import Client
    from client.settings import load_settings

    settings = load_settings()
    creds = credentials.resolve(settings)
    with Client(creds.url, creds.token, timeout=settings.http_timeout_s) as api:
        yield api


def _change(method: str, path: str, body: Any = None, **kw: Any) -> None:
    from client.adminmodels import AdminChange

    with _api() as api:
        response = (
            api.call(method, path, json=body, **kw)
            if body is not None
            else api.call(method, path, **kw)
        )
        done = api.parse(AdminChange, response)
    click.echo(f"{done.event}: done (directory version {done.version})")


def _list(path: str, model: str) -> Any:
    from client import adminmodels

    with _api() as api:
        return api.parse(getattr(adminmodels, model), api.call("GET", path))


def _seg(name: str) -> str:
    return quote(name, safe="")


def _emit(
    as_json: bool, items: list[BaseModel], header: list[str], row: Callable[[Any], list[str]]
) -> None:
    if as_json:
        click.echo(json.dumps([i.model_dump(mode="json") for i in items], indent=2))
        return
    rows = [row(i) for i in items]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def key_text(value: str) -> str:
    """A public key line, or the contents of the ``.pub`` file named instead."""
    path = Path(value).expanduser()
    if "\n" not in value and len(value) < 4096 and path.is_file():
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    return value.strip()


_JSON = click.option("--json", "as_json", is_flag=True, help="A JSON list, for scripts.")


@click.group("admin")
def admin() -> None:
    """Manage the gateway's users, keys, roles, teams, data sets, budgets and hosts.

    Needs an admin token (GPUHOP_TOKEN or `gpuhop login`). Entries from the
    gateway's config file show as source `config` and cannot be changed here.
    """


# -- users and keys -----------------------------------------------------------------


@admin.group()
def users() -> None:
    """Users: ls, add, rm."""


@users.command("ls")
@_JSON
def users_ls(as_json: bool) -> None:
    """Every user, with team, roles, keys and source."""
    found = _list("/v1/admin/users", "UsersList").users
    _emit(
        as_json,
        found,
        ["USER", "TEAM", "ROLES", "KEYS", "SOURCE"],
        lambda u: [u.name, u.team or "-", ",".join(u.roles) or "-", str(len(u.keys)), u.source],
    )


@users.command("add")
@click.argument("name")
@click.option("--team", default="", help="A declared team (`gpuhop admin teams ls`).")
@click.option("--role", "roles", multiple=True, help="Role to grant; repeatable.")
@click.option("--key", "keys", multiple=True, help="Public key line or .pub file; repeatable.")
def users_add(name: str, team: str, roles: tuple[str, ...], keys: tuple[str, ...]) -> None:
    """Add user NAME; with --key they can log in through the gateway at once."""
    body = {"name": name, "team": team, "roles": list(roles), "keys": [key_text(k) for k in keys]}
    _change("POST", "/v1/admin/users", body)


@users.command("rm")
@click.argument("name")
def users_rm(name: str) -> None:
    """Remove user NAME with their keys and roles; their open sessions end."""
    _change("DELETE", f"/v1/admin/users/{_seg(name)}")


@admin.group()
def keys() -> None:
    """Users' SSH public keys: add, rm."""


@keys.command("add")
@click.argument("user")
@click.argument("key")
def keys_add(user: str, key: str) -> None:
    """Register KEY (a public key line, or a .pub file) to USER."""
    _change("POST", f"/v1/admin/users/{_seg(user)}/keys", {"key": key_text(key)})


@keys.command("rm")
@click.argument("user")
@click.argument("key")
def keys_rm(user: str, key: str) -> None:
    """Unregister KEY (SHA256:... fingerprint, key line or .pub file) from USER."""
    _change("DELETE", f"/v1/admin/users/{_seg(user)}/keys", params={"key": key_text(key)})


# -- roles --------------------------------------------------------------------------


@admin.group()
def roles() -> None:
    """Roles: ls, add, rm, grant, revoke."""


@roles.command("ls")
@_JSON
def roles_ls(as_json: bool) -> None:
    """Every role, what it grants and who holds it."""
    found = _list("/v1/admin/roles", "RolesList").roles
    _emit(
        as_json,
        found,
        ["ROLE", "HOSTS", "ACCOUNTS", "MODES", "USERS", "SOURCE"],
        lambda r: [
            r.name,
            ",".join(r.hosts),
            ",".join(r.accounts) or "-",
            ",".join(r.modes),
            ",".join(r.granted_to) or "-",
            r.source,
        ],
    )


@roles.command("add")
@click.argument("name")
@click.option(
    "--hosts",
    "hosts",
    multiple=True,
    required=True,
    help="Host selector: '*', name:HOST, region:REGION, label:K=V; repeatable.",
)
@click.option("--account", "accounts", multiple=True, help="Remote account ('*' any); repeatable.")
@click.option("--mode", "modes", multiple=True, type=click.Choice(["passthrough", "recorded"]))
@click.option("--max-gpus", type=click.IntRange(min=0), default=0, help="0: no limit.")
@click.option("--forwarding", is_flag=True, help="Allow editor port forwards (recorded).")
@click.option(
    "--forward-port", "forward_ports", multiple=True, help="Port or LOW-HIGH range; repeatable."
)
@click.option(
    "--agent-forwarding", is_flag=True, help="Allow ssh -A (relayed per session, audited)."
)
@click.option("--remote-forwarding", is_flag=True, help="Allow ssh -R on the forward ports.")
def roles_add(
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
    """Add role NAME, as a [[roles]] entry in the gateway's config would."""
    body: dict[str, Any] = {
        "name": name,
        "hosts": list(hosts),
        "accounts": list(accounts),
        "max_gpus": max_gpus,
        "forwarding": forwarding,
        "forward_ports": [int(p) if p.strip().isdigit() else p for p in forward_ports],
        "agent_forwarding": agent_forwarding,
        "remote_forwarding": remote_forwarding,
    }
    if modes:
        body["modes"] = list(modes)
    _change("POST", "/v1/admin/roles", body)


@roles.command("rm")
@click.argument("name")
def roles_rm(name: str) -> None:
    """Remove role NAME (refused while anyone holds it)."""
    _change("DELETE", f"/v1/admin/roles/{_seg(name)}")


@roles.command("grant")
@click.argument("user")
@click.argument("role")
def roles_grant(user: str, role: str) -> None:
    """Grant ROLE to USER (applies to their next session)."""
    _change("POST", f"/v1/admin/users/{_seg(user)}/roles", {"role": role})


@roles.command("revoke")
@click.argument("user")
@click.argument("role")
def roles_revoke(user: str, role: str) -> None:
    """Revoke ROLE from USER (sessions only it allowed end)."""
    _change("DELETE", f"/v1/admin/users/{_seg(user)}/roles/{_seg(role)}")


# -- teams, data sets, budgets ------------------------------------------------------


@admin.group()
def teams() -> None:
    """Teams: ls, add, rm."""


@teams.command("ls")
@_JSON
def teams_ls(as_json: bool) -> None:
    found = _list("/v1/admin/teams", "TeamsList").teams
    _emit(
        as_json,
        found,
        ["TEAM", "MEMBERS", "SOURCE"],
        lambda t: [t.name, ",".join(t.members) or "-", t.source],
    )


@teams.command("add")
@click.argument("name")
def teams_add(name: str) -> None:
    _change("POST", "/v1/admin/teams", {"name": name})


@teams.command("rm")
@click.argument("name")
def teams_rm(name: str) -> None:
    """Remove team NAME (refused while it has members or a budget)."""
    _change("DELETE", f"/v1/admin/teams/{_seg(name)}")


@admin.group()
def datasets() -> None:
    """Data sets and where they may be processed: ls, add, rm."""


@datasets.command("ls")
@_JSON
def datasets_ls(as_json: bool) -> None:
    found = _list("/v1/admin/datasets", "DatasetsList").datasets
    _emit(
        as_json,
        found,
        ["DATASET", "REGIONS", "COUNTRIES", "SOURCE"],
        lambda d: [d.name, ",".join(d.regions) or "-", ",".join(d.countries) or "-", d.source],
    )


@datasets.command("add")
@click.argument("name")
@click.option("--region", "regions", multiple=True, help="Region it may be processed in.")
@click.option("--country", "countries", multiple=True, help="Country (ISO alpha-2) likewise.")
def datasets_add(name: str, regions: tuple[str, ...], countries: tuple[str, ...]) -> None:
    """Declare data set NAME; `gpuhop run --data NAME` then runs only where it may."""
    body = {"name": name, "regions": list(regions), "countries": list(countries)}
    _change("POST", "/v1/admin/datasets", body)


@datasets.command("rm")
@click.argument("name")
def datasets_rm(name: str) -> None:
    _change("DELETE", f"/v1/admin/datasets/{_seg(name)}")


def _owner(user: str, team: str) -> tuple[str, str]:
    if bool(user) == bool(team):
        raise UsageError("give exactly one of --user or --team")
    return ("user", user) if user else ("team", team)


@admin.group()
def budgets() -> None:
    """Spending limits per user or team: ls, set, rm."""


@budgets.command("ls")
@_JSON
def budgets_ls(as_json: bool) -> None:
    found = _list("/v1/admin/budgets", "BudgetsList").budgets
    _emit(
        as_json,
        found,
        ["OWNER", "DAILY", "MONTHLY", "SOURCE"],
        lambda b: [
            f"user {b.user}" if b.user else f"team {b.team}",
            money(b.daily),
            money(b.monthly),
            b.source,
        ],
    )


def money(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@budgets.command("set")
@click.option("--user", default="", help="The user it limits...")
@click.option("--team", default="", help="...or the team.")
@click.option("--daily", type=click.FloatRange(min=0), default=None, help="USD per UTC day.")
@click.option("--monthly", type=click.FloatRange(min=0), default=None, help="USD per UTC month.")
def budgets_set(user: str, team: str, daily: float | None, monthly: float | None) -> None:
    """Set (or replace) the limits of one user or one team."""
    kind, owner = _owner(user, team)
    _change("PUT", "/v1/admin/budgets", {kind: owner, "daily": daily, "monthly": monthly})


@budgets.command("rm")
@click.option("--user", default="")
@click.option("--team", default="")
def budgets_rm(user: str, team: str) -> None:
    kind, owner = _owner(user, team)
    _change("DELETE", f"/v1/admin/budgets/{kind}/{_seg(owner)}")


# -- hosts --------------------------------------------------------------------------


@admin.group()
def hosts() -> None:
    """Hosts: ls, add (host key fetched and confirmed, or pinned), rm."""


@hosts.command("ls")
@_JSON
def hosts_ls(as_json: bool) -> None:
    found = _list("/v1/admin/hosts", "HostsList").hosts
    _emit(
        as_json,
        found,
        ["HOST", "REGION", "ADDRESS", "SOURCE"],
        lambda h: [h.name, h.region, f"{h.address}:{h.port}", h.source],
    )


@hosts.command("add")
@click.argument("name")
@click.option("--region", required=True)
@click.option("--address", required=True, help="Where the gateway connects.")
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True)
@click.option("--host-key", default="", help="Pin this key line (the host is not contacted).")
@click.option("--fingerprint", default="", help="SHA256:... the host must present.")
@click.option("--yes", is_flag=True, help="Pin whatever key the host presents now.")
@click.option("--gpu-model", default="")
@click.option("--gpu-count", type=click.IntRange(min=0), default=0)
@click.option("--price", type=click.FloatRange(min=0), default=0.0, help="Per GPU-hour.")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE; repeatable.")
def hosts_add(
    name: str,
    region: str,
    address: str,
    port: int,
    host_key: str,
    fingerprint: str,
    yes: bool,
    gpu_model: str,
    gpu_count: int,
    price: float,
    labels: tuple[str, ...],
) -> None:
    """Add host NAME behind the gateway.

    Without --host-key the gateway fetches the key the host presents; it is
    pinned when it matches --fingerprint, with --yes, or once you confirm it
    (compare with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host).
    """
    if host_key and fingerprint:
        raise UsageError("give --host-key or --fingerprint, not both")
    label_map = {}
    for pair in labels:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--label wants KEY=VALUE, got {pair!r}")
        label_map[key] = value
    from client.adminmodels import AdminChange, HostScan

    with _api() as api:
        if not host_key:
            scan = api.parse(
                HostScan,
                api.call("POST", "/v1/admin/hosts/scan", json={"address": address, "port": port}),
            )
            host_key = _confirm(name, scan, fingerprint, yes)
        body = {
            "name": name,
            "region": region,
            "address": address,
            "port": port,
            "host_key": host_key,
            "gpu_model": gpu_model,
            "gpu_count": gpu_count,
            "price_per_gpu_hour": price,
            "labels": label_map,
        }
        done = api.parse(AdminChange, api.call("POST", "/v1/admin/hosts", json=body))
    click.echo(f"{done.event}: done (directory version {done.version})")


def _confirm(name: str, scan: HostScan, fingerprint: str, yes: bool) -> str:
    if fingerprint:
        if fingerprint.strip() != scan.fingerprint:
            raise AdminRefused(
                f"host key mismatch: {scan.address}:{scan.port} presents {scan.fingerprint}, "
                f"not {fingerprint.strip()}; {name} not added"
            )
        return scan.host_key
    if yes:
        return scan.host_key
    if not sys.stdin.isatty():
        raise UsageError(
            f"{name} presents host key {scan.fingerprint}; confirm it with "
            f"--fingerprint {scan.fingerprint} (or --yes) when not on a terminal"
        )
    click.echo(
        f"{name} ({scan.address}:{scan.port}) presents host key {scan.fingerprint}", err=True
    )
    if not click.confirm("Pin this key?", default=False, err=True):
        raise UsageError(f"{name} not added: host key not confirmed")
    return scan.host_key


@hosts.command("rm")
@click.argument("name")
def hosts_rm(name: str) -> None:
    """Remove host NAME (refused while a role names it); sessions on it end."""
    _change("DELETE", f"/v1/admin/hosts/{_seg(name)}")
