"""Wire models of ``/v1/admin`` as ``gpuhop admin`` reads them.

Only the fields the client shows; the rest is ignored, so a newer gateway can
add fields. A unit test checks each against the committed ``docs/openapi.json``.
Kept apart from ``client.admin`` so that ``gpuhop`` starts without pydantic.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

_WIRE = ConfigDict(extra="ignore", frozen=True)
Source = Literal["config", "admin"]


class AdminChange(BaseModel):
    model_config = _WIRE

    event: str
    version: int


class AdminKey(BaseModel):
    model_config = _WIRE

    fingerprint: str
    key: str
    source: Source


class AdminUser(BaseModel):
    model_config = _WIRE

    name: str
    team: str
    roles: list[str]
    keys: list[AdminKey]
    source: Source


class AdminRole(BaseModel):
    model_config = _WIRE

    name: str
    hosts: list[str]
    accounts: list[str]
    modes: list[str]
    max_gpus: int
    forwarding: bool
    forward_ports: list[int | str] = []
    agent_forwarding: bool = False
    remote_forwarding: bool = False
    granted_to: list[str]
    source: Source


class AdminTeam(BaseModel):
    model_config = _WIRE

    name: str
    members: list[str]
    source: Source


class AdminDataset(BaseModel):
    model_config = _WIRE

    name: str
    regions: list[str]
    countries: list[str]
    source: Source


class AdminBudget(BaseModel):
    model_config = _WIRE

    user: str
    team: str
    daily: float | None
    monthly: float | None
    source: Source


class AdminHost(BaseModel):
    model_config = _WIRE

    name: str
    region: str
    address: str
    port: int
    host_key: str | None
    source: Source


class HostScan(BaseModel):
    model_config = _WIRE

    address: str
    port: int
    host_key: str
    fingerprint: str


class UsersList(BaseModel):
    model_config = _WIRE
    users: list[AdminUser]


class RolesList(BaseModel):
    model_config = _WIRE
    roles: list[AdminRole]


class TeamsList(BaseModel):
    model_config = _WIRE
    teams: list[AdminTeam]


class DatasetsList(BaseModel):
    model_config = _WIRE
    datasets: list[AdminDataset]


class BudgetsList(BaseModel):
    model_config = _WIRE
    budgets: list[AdminBudget]


class HostsList(BaseModel):
    model_config = _WIRE
    hosts: list[AdminHost]
