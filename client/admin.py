"""``gpuhop admin …``: the gateway's directory over its API, with an admin token.

The commands are those of ``client.admintable``; here each one is a request to
``/v1/admin``, where the gateway checks, audits and applies the change. Entries
from the gateway's config file are listed as source ``config`` and refused for
change. Exit codes (the same as ``gpuhop-gateway admin``): 65 a refused change
(invalid, duplicate, in use, config-managed, host key mismatch), 66 no such
entry, 77 not an admin token, 75 a host that could not be reached, 2 bad flags
(and a host key not confirmed).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from client import admintable
from client.admintable import Handler, key_text, labels, money, owner, role_spec
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


def _done(api: Any, response: Any) -> None:
    from client.adminmodels import AdminChange

    done = api.parse(AdminChange, response)
    click.echo(f"{done.event}: done (directory version {done.version})")


def _change(method: str, path: str, body: Any = None, **kw: Any) -> None:
    with _api() as api:
        if body is not None:
            kw["json"] = body
        _done(api, api.call(method, path, **kw))


def _list(path: str, model: str) -> Any:
    from client import adminmodels

    with _api() as api:
        return api.parse(getattr(adminmodels, model), api.call("GET", path))


def _seg(name: str) -> str:
    return quote(name, safe="")


def _lister(
    group: str, path: str, model: str, row: Callable[[Any], list[str]]
) -> Callable[..., None]:
    def ls(as_json: bool) -> None:
        items: list[BaseModel] = getattr(_list(path, model), group)
        if as_json:
            click.echo(json.dumps([i.model_dump(mode="json") for i in items], indent=2))
            return
        header = next(c.columns for c in admintable.commands() if c.path == (group, "ls"))
        admintable.render(header, [row(i) for i in items])

    return ls


def _host_add(**f: Any) -> None:
    if f["host_key"] and f["fingerprint"]:
        raise UsageError("give --host-key or --fingerprint, not both")
    body = {k: f[k] for k in ("name", "region", "address", "port", "gpu_model", "gpu_count")}
    body |= {"price_per_gpu_hour": f["price_per_gpu_hour"], "egress_per_gb": f["egress_per_gb"]}
    body["labels"] = labels(f["labels"])
    from client.adminmodels import HostScan

    with _api() as api:
        host_key = f["host_key"]
        if not host_key:
            scan_body = {"address": f["address"], "port": f["port"]}
            scan = api.parse(HostScan, api.call("POST", "/v1/admin/hosts/scan", json=scan_body))
            host_key = _confirm(f["name"], scan, f["fingerprint"], f["yes"])
        _done(api, api.call("POST", "/v1/admin/hosts", json={**body, "host_key": host_key}))


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


def _budget_set(user: str, team: str, daily: float | None, monthly: float | None) -> None:
    kind, name = owner(user, team)
    _change("PUT", "/v1/admin/budgets", {kind: name, "daily": daily, "monthly": monthly})


def _budget_rm(user: str, team: str) -> None:
    kind, name = owner(user, team)
    _change("DELETE", f"/v1/admin/budgets/{kind}/{_seg(name)}")


HANDLERS: dict[tuple[str, str], Handler] = {
    ("users", "ls"): _lister(
        "users",
        "/v1/admin/users",
        "UsersList",
        lambda u: [u.name, u.team or "-", ",".join(u.roles) or "-", str(len(u.keys)), u.source],
    ),
    ("users", "add"): lambda name, team, roles, keys: _change(
        "POST",
        "/v1/admin/users",
        {"name": name, "team": team, "roles": list(roles), "keys": [key_text(k) for k in keys]},
    ),
    ("users", "rm"): lambda name: _change("DELETE", f"/v1/admin/users/{_seg(name)}"),
    ("keys", "add"): lambda user, key: _change(
        "POST", f"/v1/admin/users/{_seg(user)}/keys", {"key": key_text(key)}
    ),
    ("keys", "rm"): lambda user, key: _change(
        "DELETE", f"/v1/admin/users/{_seg(user)}/keys", params={"key": key_text(key)}
    ),
    ("roles", "ls"): _lister(
        "roles",
        "/v1/admin/roles",
        "RolesList",
        lambda r: [
            r.name,
            ",".join(r.hosts),
            ",".join(r.accounts) or "-",
            ",".join(r.modes),
            ",".join(r.granted_to) or "-",
            r.source,
        ],
    ),
    ("roles", "add"): lambda **f: _change("POST", "/v1/admin/roles", role_spec(f)),
    ("roles", "rm"): lambda name: _change("DELETE", f"/v1/admin/roles/{_seg(name)}"),
    ("roles", "grant"): lambda user, role: _change(
        "POST", f"/v1/admin/users/{_seg(user)}/roles", {"role": role}
    ),
    ("roles", "revoke"): lambda user, role: _change(
        "DELETE", f"/v1/admin/users/{_seg(user)}/roles/{_seg(role)}"
    ),
    ("teams", "ls"): _lister(
        "teams",
        "/v1/admin/teams",
        "TeamsList",
        lambda t: [t.name, ",".join(t.members) or "-", t.source],
    ),
    ("teams", "add"): lambda name: _change("POST", "/v1/admin/teams", {"name": name}),
    ("teams", "rm"): lambda name: _change("DELETE", f"/v1/admin/teams/{_seg(name)}"),
    ("datasets", "ls"): _lister(
        "datasets",
        "/v1/admin/datasets",
        "DatasetsList",
        lambda d: [d.name, ",".join(d.regions) or "-", ",".join(d.countries) or "-", d.source],
    ),
    ("datasets", "add"): lambda name, regions, countries: _change(
        "POST",
        "/v1/admin/datasets",
        {"name": name, "regions": list(regions), "countries": list(countries)},
    ),
    ("datasets", "rm"): lambda name: _change("DELETE", f"/v1/admin/datasets/{_seg(name)}"),
    ("budgets", "ls"): _lister(
        "budgets",
        "/v1/admin/budgets",
        "BudgetsList",
        lambda b: [
            f"user {b.user}" if b.user else f"team {b.team}",
            money(b.daily),
            money(b.monthly),
            b.source,
        ],
    ),
    ("budgets", "set"): _budget_set,
    ("budgets", "rm"): _budget_rm,
    ("hosts", "ls"): _lister(
        "hosts",
        "/v1/admin/hosts",
        "HostsList",
        lambda h: [h.name, h.region, f"{h.address}:{h.port}", h.source],
    ),
    ("hosts", "add"): _host_add,
    ("hosts", "rm"): lambda name: _change("DELETE", f"/v1/admin/hosts/{_seg(name)}"),
}


admin = admintable.build(
    "Manage the gateway's users, keys, roles, teams, data sets, budgets and hosts.\n\n"
    "Needs an admin token (GPUHOP_TOKEN or `gpuhop login`). Entries from the\n"
    "gateway's config file show as source `config` and cannot be changed here.",
    HANDLERS,
    wrap=admintable.flag_errors_as(UsageError),
)
