"""Wire models of ``/v1/admin``: the directory as admins see and change it.

Entries with several fields are sent as the config file's own models
(``RoleConfig``, ``DatasetConfig``, ``BudgetConfig``, ``HostConfig``), so the
API accepts exactly what the config file accepts. Every entry says where it
comes from: ``config`` (read-only here) or ``admin``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.adapters.storage.directory import Stamp
from gateway.config.fields import Address, KeyLine, Name, Port
from gateway.services.directoryview import DirectoryView, Entry, TeamEntry, UserEntry

_OUT = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
_IN = ConfigDict(extra="forbid", use_attribute_docstrings=True)

Source = Literal["config", "admin"]


class _Stamped(BaseModel):
    model_config = _OUT

    source: Source
    """``config``: declared in the config file (change it there); ``admin``: added at run time."""
    created_at: float | None
    """When an admin added it; null for config entries."""
    created_by: str
    """Who added it (the admin token's user, or ``local:NAME`` for the gateway CLI)."""

    @staticmethod
    def stamp_fields(source: Source, stamp: Stamp | None) -> dict[str, Any]:
        if stamp is None:
            return {"source": source, "created_at": None, "created_by": ""}
        return {"source": source, "created_at": stamp.created_at, "created_by": stamp.created_by}


class AdminChange(BaseModel):
    """What a change did."""

    model_config = _OUT

    event: str
    """The audit event it was recorded as, e.g. ``admin.user.add``."""
    version: int
    """The directory's version after it (every change adds one)."""


class UserKeyOut(_Stamped):
    fingerprint: str
    key: str


class AdminUserOut(_Stamped):
    name: str
    team: str
    roles: list[str]
    keys: list[UserKeyOut]

    @classmethod
    def of(cls, u: UserEntry) -> AdminUserOut:
        keys = [
            UserKeyOut(fingerprint=k.fingerprint, key=k.line, **cls.stamp_fields(k.source, k.stamp))
            for k in u.keys
        ]
        return cls(name=u.name, team=u.team, roles=list(u.roles), keys=keys,
                   **cls.stamp_fields(u.source, u.stamp))  # fmt: skip


class AdminUserList(BaseModel):
    model_config = _OUT

    users: list[AdminUserOut]


class AdminUserCreate(BaseModel):
    """A new user; roles and keys may also be added later."""

    model_config = _IN

    name: Name
    team: str = ""
    """A declared team (``/v1/admin/teams``), or empty."""
    roles: list[Name] = []
    keys: list[KeyLine] = []
    """OpenSSH public key lines."""


class KeyCreate(BaseModel):
    model_config = _IN

    key: KeyLine
    """One OpenSSH public key line (``ssh-ed25519 AAAA... comment``)."""


class RoleGrant(BaseModel):
    model_config = _IN

    role: Name


class AdminRoleOut(_Stamped):
    """A role as a ``[[roles]]`` entry declares it, and who holds it."""

    name: str
    hosts: list[str]
    accounts: list[str]
    modes: list[str]
    max_gpus: int
    forwarding: bool
    ci_golden: bool = False
    """CI tokens may start golden runs with this role."""
    forward_ports: list[int | str]
    """Host loopback ports forwards may reach (numbers and ``"LOW-HIGH"`` ranges)."""
    agent_forwarding: bool
    remote_forwarding: bool
    granted_to: list[str]
    """Users holding the role."""


class AdminRoleList(BaseModel):
    model_config = _OUT

    roles: list[AdminRoleOut]


class TeamCreate(BaseModel):
    model_config = _IN

    name: Name


class AdminTeamOut(_Stamped):
    name: str
    members: list[str]


class AdminTeamList(BaseModel):
    model_config = _OUT

    teams: list[AdminTeamOut]


class AdminDatasetOut(_Stamped):
    name: str
    regions: list[str]
    countries: list[str]


class AdminDatasetList(BaseModel):
    model_config = _OUT

    datasets: list[AdminDatasetOut]


class AdminBudgetOut(_Stamped):
    user: str
    """The user it limits, or empty for a team's budget."""
    team: str
    daily: float | None
    monthly: float | None


class AdminBudgetList(BaseModel):
    model_config = _OUT

    budgets: list[AdminBudgetOut]


class AdminHostOut(_Stamped):
    """A host as a ``[[hosts]]`` entry declares it."""

    name: str
    region: str
    address: str
    port: int
    host_key: str | None
    host_ca: str | None
    gpu_model: str
    gpu_count: int
    price_per_gpu_hour: float
    egress_per_gb: float
    residency: list[str]
    labels: dict[str, str]


class AdminHostList(BaseModel):
    model_config = _OUT

    hosts: list[AdminHostOut]


class HostScan(BaseModel):
    """Where to fetch a host key from."""

    model_config = _IN

    address: Address
    port: Port = 22
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0


class HostScanOut(BaseModel):
    model_config = _OUT

    address: str
    port: int
    host_key: str
    """The key the host presented, one OpenSSH line: what ``host_key`` pins."""
    fingerprint: str
    """Its ``SHA256:...`` fingerprint, to compare with ``ssh-keygen -lf`` on the host."""


def _meta(e: Entry[Any] | TeamEntry) -> dict[str, Any]:
    return _Stamped.stamp_fields(e.source, e.stamp)


def users_out(view: DirectoryView) -> AdminUserList:
    return AdminUserList(users=[AdminUserOut.of(u) for u in view.users.values()])


def roles_out(view: DirectoryView) -> AdminRoleList:
    out = []
    for name, e in view.roles.items():
        holders = sorted(u.name for u in view.users.values() if name in u.roles)
        out.append(AdminRoleOut(**e.config.model_dump(mode="json"), granted_to=holders, **_meta(e)))
    return AdminRoleList(roles=out)


def teams_out(view: DirectoryView) -> AdminTeamList:
    return AdminTeamList(
        teams=[
            AdminTeamOut(name=t.name, members=list(t.members), **_meta(t))
            for t in view.teams.values()
        ]
    )


def datasets_out(view: DirectoryView) -> AdminDatasetList:
    return AdminDatasetList(
        datasets=[
            AdminDatasetOut(**e.config.model_dump(mode="json"), **_meta(e))
            for e in view.datasets.values()
        ]
    )


def budgets_out(view: DirectoryView) -> AdminBudgetList:
    return AdminBudgetList(
        budgets=[
            AdminBudgetOut(**e.config.model_dump(mode="json"), **_meta(e))
            for e in view.budgets.values()
        ]
    )


def hosts_out(view: DirectoryView) -> AdminHostList:
    return AdminHostList(
        hosts=[
            AdminHostOut(**e.config.model_dump(mode="json"), **_meta(e))
            for e in view.hosts.values()
        ]
    )
