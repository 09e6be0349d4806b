"""``/v1/admin``: users, keys, roles, teams, data sets, budgets and hosts (admin tokens only).

Every change goes through the gateway's ``DirectoryService``: checked by the
config file's rules, audited (``admin.user.add``, ``admin.key.remove``, ...,
with the acting token) before it is written, then swapped into this gateway at
once and into other replicas within their poll interval. Config entries are
listed with ``source: config`` and refused for change (409 ``config_managed``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from gateway.adapters.hosts.hostscan import scan_host_key
from gateway.config import changes as ch
from gateway.config.directory import BudgetConfig, DatasetConfig, HostConfig, RoleConfig
from gateway.edges.http import adminschemas as s
from gateway.edges.http.auth import AdminCaller, Caller, Ctx
from gateway.edges.http.context import ApiContext
from gateway.edges.http.errors import ApiError, described
from gateway.errors import UpstreamError
from gateway.services.directory import Actor, key_fingerprint

router = APIRouter(prefix="/admin", tags=["admin"])

CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    404: described("No such user, key, role, team, data set, budget or host"),
    409: described("It exists already, is still in use, or is declared in the config file"),
}
NameArg = Annotated[str, Path(min_length=1, max_length=64)]


async def _change(ctx: ApiContext, caller: Caller, change: ch.Change) -> s.AdminChange:
    actor = Actor(caller.user, caller.token.id, caller.source)
    view = await ctx.directory.apply(change, actor)
    return s.AdminChange(event=change.event, version=view.version)


# -- users and keys --


@router.get("/users", response_model=s.AdminUserList)
async def list_users(ctx: Ctx, caller: AdminCaller) -> s.AdminUserList:
    """Every user, from the config file and added by admins, with keys and roles."""
    return s.users_out(await ctx.directory.load())


@router.post("/users", response_model=s.AdminChange, status_code=201, responses=CHANGE_ERRORS)
async def add_user(ctx: Ctx, caller: AdminCaller, body: s.AdminUserCreate) -> s.AdminChange:
    """Add a user (``admin.user.add``); with keys it can log in at once."""
    change = ch.AddUser(body.name, body.team, tuple(body.roles), tuple(body.keys))
    return await _change(ctx, caller, change)


@router.delete("/users/{name}", response_model=s.AdminChange, responses=CHANGE_ERRORS)
async def remove_user(ctx: Ctx, caller: AdminCaller, name: NameArg) -> s.AdminChange:
    """Remove a user with their keys and grants; their open connections and sessions end."""
    return await _change(ctx, caller, ch.RemoveUser(name))


@router.post(
    "/users/{name}/keys", response_model=s.AdminChange, status_code=201, responses=CHANGE_ERRORS
)
async def add_key(ctx: Ctx, caller: AdminCaller, name: NameArg, body: s.KeyCreate) -> s.AdminChange:
    """Register a public key to a user (``admin.key.add``)."""
    return await _change(ctx, caller, ch.AddKey(name, body.key))


@router.delete("/users/{name}/keys", response_model=s.AdminChange, responses=CHANGE_ERRORS)
async def remove_key(
    ctx: Ctx,
    caller: AdminCaller,
    name: NameArg,
    key: Annotated[str, Query(min_length=1, max_length=16384)],
) -> s.AdminChange:
    """Unregister a key, named by ``SHA256:...`` fingerprint or by its public key line."""
    return await _change(ctx, caller, ch.RemoveKey(name, key_fingerprint(key)))


@router.post(
    "/users/{name}/roles", response_model=s.AdminChange, status_code=201, responses=CHANGE_ERRORS
)
async def grant_role(
    ctx: Ctx, caller: AdminCaller, name: NameArg, body: s.RoleGrant
) -> s.AdminChange:
    """Grant a role to a user (``admin.role.grant``); it applies to their next session."""
    return await _change(ctx, caller, ch.Grant(name, body.role))


@router.delete("/users/{name}/roles/{role}", response_model=s.AdminChange, responses=CHANGE_ERRORS)
async def revoke_role(ctx: Ctx, caller: AdminCaller, name: NameArg, role: NameArg) -> s.AdminChange:
    """Revoke a role (``admin.role.revoke``); sessions only it allowed end."""
    return await _change(ctx, caller, ch.Revoke(name, role))


# -- roles --


@router.get("/roles", response_model=s.AdminRoleList)
async def list_roles(ctx: Ctx, caller: AdminCaller) -> s.AdminRoleList:
    """Every role and who holds it."""
    return s.roles_out(await ctx.directory.load())


@router.post("/roles", response_model=s.AdminChange, status_code=201, responses=CHANGE_ERRORS)
async def add_role(ctx: Ctx, caller: AdminCaller, body: RoleConfig) -> s.AdminChange:
    """Add a role, as a ``[[roles]]`` entry (``admin.role.add``)."""
    return await _change(ctx, caller, ch.AddRole(body))


@router.delete("/roles/{name}", response_model=s.AdminChange, responses=CHANGE_ERRORS)
async def remove_role(ctx: Ctx, caller: AdminCaller, name: NameArg) -> s.AdminChange:
    """Remove a role nobody holds (``admin.role.remove``)."""
    return await _change(ctx, caller, ch.RemoveRole(name))


# -- teams --


@router.get("/teams", response_model=s.AdminTeamList)
async def list_teams(ctx: Ctx, caller: AdminCaller) -> s.AdminTeamList:
    """Every team and its members (config teams are those its users and budgets name)."""
    return s.teams_out(await ctx.directory.load())


@router.post("/teams", response_model=s.AdminChange, status_code=201, responses=CHANGE_ERRORS)
async def add_team(ctx: Ctx, caller: AdminCaller, body: s.TeamCreate) -> s.AdminChange:
    return await _change(ctx, caller, ch.AddTeam(body.name))


@router.delete("/teams/{name}", response_model=s.AdminChange, responses=CHANGE_ERRORS)
async def remove_team(ctx: Ctx, caller: AdminCaller, name: NameArg) -> s.AdminChange:
    """Remove a team with no members and no budget."""
    return await _change(ctx, caller, ch.RemoveTeam(name))


# -- data sets and budgets --


@router.get("/datasets", response_model=s.AdminDatasetList)
async def list_datasets(ctx: Ctx, caller: AdminCaller) -> s.AdminDatasetList:
    return s.datasets_out(await ctx.directory.load())


@router.post("/datasets", response_model=s.AdminChange, status_code=201, responses=CHANGE_ERRORS)
async def add_dataset(ctx: Ctx, caller: AdminCaller, body: DatasetConfig) -> s.AdminChange:
    """Declare a data set and where it may be processed (``admin.dataset.add``)."""
    return await _change(ctx, caller, ch.AddDataset(body))


@router.delete("/datasets/{name}", response_model=s.AdminChange, responses=CHANGE_ERRORS)
async def remove_dataset(ctx: Ctx, caller: AdminCaller, name: NameArg) -> s.AdminChange:
    return await _change(ctx, caller, ch.RemoveDataset(name))


@router.get("/budgets", response_model=s.AdminBudgetList)
async def list_budgets(ctx: Ctx, caller: AdminCaller) -> s.AdminBudgetList:
    return s.budgets_out(await ctx.directory.load())


@router.put("/budgets", response_model=s.AdminChange, responses=CHANGE_ERRORS)
async def set_budget(ctx: Ctx, caller: AdminCaller, body: BudgetConfig) -> s.AdminChange:
    """Set (or replace) a user's or a team's limits (``admin.budget.set``)."""
    return await _change(ctx, caller, ch.SetBudget(body))


@router.delete("/budgets/{kind}/{owner}", response_model=s.AdminChange, responses=CHANGE_ERRORS)
async def remove_budget(
    ctx: Ctx, caller: AdminCaller, kind: Literal["user", "team"], owner: NameArg
) -> s.AdminChange:
    return await _change(ctx, caller, ch.RemoveBudget(kind, owner))


# -- hosts --


@router.get("/hosts", response_model=s.AdminHostList)
async def list_hosts(ctx: Ctx, caller: AdminCaller) -> s.AdminHostList:
    """Every host as declared, with its pinned key and where it comes from."""
    return s.hosts_out(await ctx.directory.load())


@router.post(
    "/hosts/scan",
    response_model=s.HostScanOut,
    responses={502: described("The host did not answer with an SSH host key")},
)
async def scan_host(ctx: Ctx, caller: AdminCaller, body: s.HostScan) -> s.HostScanOut:
    """Fetch the host key ``address:port`` presents (no login), to confirm before pinning it."""
    try:
        found = await scan_host_key(body.address, body.port, body.timeout_s)
    except UpstreamError as exc:
        raise ApiError(502, "host_unreachable", str(exc)) from None
    return s.HostScanOut(
        address=body.address, port=body.port, host_key=found.line, fingerprint=found.fingerprint
    )


@router.post("/hosts", response_model=s.AdminChange, status_code=201, responses=CHANGE_ERRORS)
async def add_host(ctx: Ctx, caller: AdminCaller, body: HostConfig) -> s.AdminChange:
    """Add a host, as a ``[[hosts]]`` entry with its key pinned (``admin.host.add``).

    New sessions and probes use it at once; the catalog's prices apply to it
    from the next gateway start (until then, its own ``price_per_gpu_hour``).
    """
    return await _change(ctx, caller, ch.AddHost(body))


@router.delete("/hosts/{name}", response_model=s.AdminChange, responses=CHANGE_ERRORS)
async def remove_host(ctx: Ctx, caller: AdminCaller, name: NameArg) -> s.AdminChange:
    """Remove a host no role names; running sessions to it go on."""
    return await _change(ctx, caller, ch.RemoveHost(name))
