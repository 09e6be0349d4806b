"""The changes an admin can make to the directory, as plain values.

Each change names its audit event (``admin.user.add``, ...) and the data that
event carries, so the API, the local CLI and the audit log describe a change
the same way. Entries with several fields (roles, data sets, budgets, hosts)
travel as the config file's own pydantic models: one validation for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.config.directory import BudgetConfig, DatasetConfig, HostConfig, RoleConfig

OwnerKind = Literal["user", "team"]


@dataclass(frozen=True, slots=True)
class AddUser:
    name: str
    team: str = ""
    roles: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    event = "admin.user.add"

    def audit_data(self) -> dict[str, object]:
        return {
            "user": self.name,
            "team": self.team,
            "roles": list(self.roles),
            "keys": list(self.keys),
        }


@dataclass(frozen=True, slots=True)
class RemoveUser:
    name: str
    event = "admin.user.remove"

    def audit_data(self) -> dict[str, object]:
        return {"user": self.name}


@dataclass(frozen=True, slots=True)
class AddKey:
    user: str
    key: str
    event = "admin.key.add"

    def audit_data(self) -> dict[str, object]:
        return {"user": self.user, "key": self.key}


@dataclass(frozen=True, slots=True)
class RemoveKey:
    user: str
    fingerprint: str
    event = "admin.key.remove"

    def audit_data(self) -> dict[str, object]:
        return {"user": self.user, "fingerprint": self.fingerprint}


@dataclass(frozen=True, slots=True)
class AddRole:
    role: RoleConfig
    event = "admin.role.add"

    def audit_data(self) -> dict[str, object]:
        return {"role": self.role.name, "spec": self.role.model_dump(mode="json")}


@dataclass(frozen=True, slots=True)
class RemoveRole:
    name: str
    event = "admin.role.remove"

    def audit_data(self) -> dict[str, object]:
        return {"role": self.name}


@dataclass(frozen=True, slots=True)
class Grant:
    user: str
    role: str
    event = "admin.role.grant"

    def audit_data(self) -> dict[str, object]:
        return {"user": self.user, "role": self.role}


@dataclass(frozen=True, slots=True)
class Revoke:
    user: str
    role: str
    event = "admin.role.revoke"

    def audit_data(self) -> dict[str, object]:
        return {"user": self.user, "role": self.role}


@dataclass(frozen=True, slots=True)
class AddTeam:
    name: str
    event = "admin.team.add"

    def audit_data(self) -> dict[str, object]:
        return {"team": self.name}


@dataclass(frozen=True, slots=True)
class RemoveTeam:
    name: str
    event = "admin.team.remove"

    def audit_data(self) -> dict[str, object]:
        return {"team": self.name}


@dataclass(frozen=True, slots=True)
class AddDataset:
    dataset: DatasetConfig
    event = "admin.dataset.add"

    def audit_data(self) -> dict[str, object]:
        return {"dataset": self.dataset.name, "spec": self.dataset.model_dump(mode="json")}


@dataclass(frozen=True, slots=True)
class RemoveDataset:
    name: str
    event = "admin.dataset.remove"

    def audit_data(self) -> dict[str, object]:
        return {"dataset": self.name}


@dataclass(frozen=True, slots=True)
class SetBudget:
    budget: BudgetConfig
    event = "admin.budget.set"

    def audit_data(self) -> dict[str, object]:
        return self.budget.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class RemoveBudget:
    kind: OwnerKind
    owner: str
    event = "admin.budget.remove"

    def audit_data(self) -> dict[str, object]:
        return {self.kind: self.owner}


@dataclass(frozen=True, slots=True)
class AddHost:
    host: HostConfig
    event = "admin.host.add"

    def audit_data(self) -> dict[str, object]:
        return {"host": self.host.name, "spec": self.host.model_dump(mode="json")}


@dataclass(frozen=True, slots=True)
class RemoveHost:
    name: str
    event = "admin.host.remove"

    def audit_data(self) -> dict[str, object]:
        return {"host": self.name}


Change = (
    AddUser
    | RemoveUser
    | AddKey
    | RemoveKey
    | AddRole
    | RemoveRole
    | Grant
    | Revoke
    | AddTeam
    | RemoveTeam
    | AddDataset
    | RemoveDataset
    | SetBudget
    | RemoveBudget
    | AddHost
    | RemoveHost
)
