"""The effective directory: config entries (read-only) merged with stored ones, and change checks.

Pure: no I/O. ``DirectoryView.build`` merges the config file with what storage
holds; where a stored entry clashes with a config entry (the config file was
edited to declare the same name later), the config entry wins and the stored
one is skipped with a warning, so the gateway always starts. ``check`` refuses
a change with one line, by the same rules the config file is held to:
names and keys are unique, references resolve, and nothing the config file
declares can be changed from here (``ConfigManaged``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from gateway.adapters.storage.directory import Stamp, StoredDirectory
from gateway.config import changes as ch
from gateway.config.directory import BudgetConfig, DatasetConfig, HostConfig, RoleConfig, UserConfig
from gateway.config.loader import Settings
from gateway.domain.inventory.hosts import Inventory
from gateway.domain.inventory.keys import parse_public_key
from gateway.domain.metering.budgets import BudgetLimits
from gateway.domain.models import Region, User
from gateway.domain.policy.residency import DataSet
from gateway.errors import (
    ConfigManaged,
    DirectoryConflict,
    DirectoryInvalid,
    DirectoryNotFound,
    KeyMaterialError,
)

log = structlog.get_logger("gpuhop.directory")

Source = Literal["config", "admin"]
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_CHANGE_IN_CONFIG = "is declared in the config file; change it there"


@dataclass(frozen=True, slots=True)
class KeyEntry:
    fingerprint: str
    line: str
    source: Source
    stamp: Stamp | None = None


@dataclass(frozen=True, slots=True)
class UserEntry:
    name: str
    team: str
    roles: tuple[str, ...]
    keys: tuple[KeyEntry, ...]
    source: Source
    stamp: Stamp | None = None


@dataclass(frozen=True, slots=True)
class TeamEntry:
    name: str
    source: Source
    members: tuple[str, ...] = ()
    stamp: Stamp | None = None


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """A role, data set, budget or host: its config model and where it comes from."""

    config: T
    source: Source
    stamp: Stamp | None = None


def validated(model: type[M], **fields: object) -> M:
    """``model(**fields)``, or ``DirectoryInvalid`` naming the first problem in one line."""
    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise DirectoryInvalid(f"{where}: {' '.join(msg.split())}" if where else msg) from None


def budget_owner(b: BudgetConfig) -> tuple[ch.OwnerKind, str]:
    return ("user", b.user) if b.user else ("team", b.team)


@dataclass
class DirectoryView:
    """The directory at one version; build it with :meth:`build`."""

    settings: Settings
    version: int = 0
    users: dict[str, UserEntry] = field(default_factory=dict)
    roles: dict[str, Entry[RoleConfig]] = field(default_factory=dict)
    teams: dict[str, TeamEntry] = field(default_factory=dict)
    datasets: dict[str, Entry[DatasetConfig]] = field(default_factory=dict)
    budgets: dict[tuple[ch.OwnerKind, str], Entry[BudgetConfig]] = field(default_factory=dict)
    hosts: dict[str, Entry[HostConfig]] = field(default_factory=dict)
    key_owners: dict[bytes, str] = field(default_factory=dict)

    # -- building --

    @classmethod
    def build(cls, settings: Settings, stored: StoredDirectory | None = None) -> DirectoryView:
        """Config entries, then stored ones that do not clash with them."""
        stored = stored or StoredDirectory()
        view = cls(settings, stored.version)
        view._add_config()
        view._add_stored(stored)
        view._count_members()
        return view

    def _add_config(self) -> None:
        s = self.settings
        for h in s.hosts:
            self.hosts[h.name] = Entry(h, "config")
        for r in s.roles:
            self.roles[r.name] = Entry(r, "config")
        for d in s.datasets:
            self.datasets[d.name] = Entry(d, "config")
        for b in s.budgets:
            self.budgets[budget_owner(b)] = Entry(b, "config")
        for u in s.users:
            keys = []
            for line in u.keys:
                key = parse_public_key(line)
                self.key_owners[key.blob] = u.name
                keys.append(KeyEntry(key.fingerprint, line, "config"))
            self.users[u.name] = UserEntry(u.name, u.team, u.roles, tuple(keys), "config")
        implied = {u.team for u in s.users} | {b.team for b in s.budgets}
        for team in sorted(implied - {""}):
            self.teams[team] = TeamEntry(team, "config")

    def _add_stored(self, stored: StoredDirectory) -> None:
        for t in stored.teams:
            if self._fresh("team", t.name, self.teams):
                self.teams[t.name] = TeamEntry(t.name, "admin", stamp=t.stamp)
        for h in stored.hosts:
            if self._fresh("host", h.config.name, self.hosts) and self._endpoint_free(h.config):
                self.hosts[h.config.name] = Entry(h.config, "admin", h.stamp)
        for r in stored.roles:
            if self._fresh("role", r.config.name, self.roles):
                self.roles[r.config.name] = Entry(r.config, "admin", r.stamp)
        for d in stored.datasets:
            if self._fresh("dataset", d.config.name, self.datasets):
                self.datasets[d.config.name] = Entry(d.config, "admin", d.stamp)
        for b in stored.budgets:
            owner = budget_owner(b.config)
            if self._fresh("budget", ":".join(owner), self.budgets, owner):
                self.budgets[owner] = Entry(b.config, "admin", b.stamp)
        for u in stored.users:
            if not self._fresh("user", u.name, self.users):
                continue
            keys = []
            for k in stored.keys:
                if k.user != u.name:
                    continue
                blob = parse_public_key(k.line).blob
                other = self.key_owners.setdefault(blob, u.name)
                if other != u.name:
                    log.warning(
                        "skipping stored key registered to another user",
                        user=u.name,
                        fingerprint=k.fingerprint,
                        owner=other,
                    )
                    continue
                keys.append(KeyEntry(k.fingerprint, k.line, "admin", k.stamp))
            roles = tuple(g.role for g in stored.grants if g.user == u.name)
            self.users[u.name] = UserEntry(u.name, u.team, roles, tuple(keys), "admin", u.stamp)

    def _fresh(self, kind: str, name: str, taken: Mapping[Any, object], key: object = None) -> bool:
        if (name if key is None else key) in taken:
            log.warning(f"stored {kind} shadowed by the config file; skipped", name=name)
            return False
        return True

    def _endpoint_free(self, host: HostConfig) -> bool:
        for other in self.hosts.values():
            if (other.config.address, other.config.port) == (host.address, host.port):
                log.warning("stored host has another host's address; skipped", name=host.name)
                return False
        return True

    def _count_members(self) -> None:
        for name, team in self.teams.items():
            members = tuple(sorted(u.name for u in self.users.values() if u.team == name))
            self.teams[name] = TeamEntry(team.name, team.source, members, team.stamp)

    # -- what the gateway runs on --

    @property
    def regions(self) -> dict[str, str]:
        """Region name → country."""
        return {r.name: r.country for r in self.settings.regions}

    def inventory(self) -> Inventory:
        """The frozen inventory the SSH front, the API and probes use."""
        countries = self.regions
        return Inventory(
            hosts=tuple(e.config.to_host(countries[e.config.region]) for e in self.hosts.values()),
            regions=tuple(Region(r.name, r.country, r.display) for r in self.settings.regions),
            roles=tuple(e.config.to_role() for e in self.roles.values()),
            users=tuple(
                User(u.name, u.roles, tuple(k.line for k in u.keys), u.team)
                for u in self.users.values()
            ),
        )

    def dataset_list(self) -> list[DataSet]:
        return [e.config.to_dataset() for e in self.datasets.values()]

    def budget_limits(self) -> dict[tuple[str, str], BudgetLimits]:
        return {owner: e.config.to_limits() for owner, e in self.budgets.items()}

    # -- checking changes --

    def check(self, change: ch.Change) -> None:
        """Raise a ``DirectoryError`` (one line) unless ``change`` may be made now."""
        match change:
            case ch.AddUser():
                self._check_add_user(change)
            case ch.RemoveUser(name=name):
                self._admin_user(name)
            case ch.AddKey(user=user, key=line):
                self._admin_user(user)
                self._key_free(line)
            case ch.RemoveKey(user=user, fingerprint=fp):
                entry = self._admin_user(user)
                if fp not in {k.fingerprint for k in entry.keys}:
                    raise DirectoryNotFound(f"user {user} has no key {fp}")
            case ch.AddRole(role=role):
                self._new("role", role.name, self.roles)
                self._check_selectors(role)
            case ch.RemoveRole(name=name):
                self._admin_entry("role", name, self.roles)
                holders = sorted(u.name for u in self.users.values() if name in u.roles)
                if holders:
                    raise DirectoryConflict(
                        f"role {name} is granted to {', '.join(holders)}; revoke it first"
                    )
            case ch.Grant(user=user, role=role):
                entry = self._admin_user(user)
                self._known_role(role)
                if role in entry.roles:
                    raise DirectoryConflict(f"user {user} already has role {role}")
            case ch.Revoke(user=user, role=role):
                if role not in self._admin_user(user).roles:
                    raise DirectoryNotFound(f"user {user} does not have role {role}")
            case ch.AddTeam(name=name):
                if not _NAME.fullmatch(name):
                    raise DirectoryInvalid(
                        f"team: {name!r} is not a name (letters, digits, '.', '_', '-')"
                    )
                self._new("team", name, self.teams)
            case ch.RemoveTeam(name=name):
                self._check_remove_team(name)
            case ch.AddDataset(dataset=ds):
                self._check_dataset(ds)
            case ch.RemoveDataset(name=name):
                self._admin_entry("data set", name, self.datasets)
            case ch.SetBudget(budget=b):
                self._check_budget(b)
            case ch.RemoveBudget(kind=kind, owner=owner):
                self._admin_entry("budget", f"{kind} {owner}", self.budgets, (kind, owner))
            case ch.AddHost(host=host):
                self._check_host(host)
            case ch.RemoveHost(name=name):
                self._check_remove_host(name)

    def _check_add_user(self, change: ch.AddUser) -> None:
        validated(
            UserConfig, name=change.name, team=change.team, roles=change.roles, keys=change.keys
        )
        self._new("user", change.name, self.users)
        if change.team and change.team not in self.teams:
            raise DirectoryInvalid(
                f"unknown team {change.team!r}{_declared(self.teams)}; "
                "add it with `admin teams add`"
            )
        for role in change.roles:
            self._known_role(role)
        seen: set[bytes] = set()
        for line in change.keys:
            blob = self._key_free(line)
            if blob in seen:
                raise DirectoryInvalid(f"key {parse_public_key(line).fingerprint} is given twice")
            seen.add(blob)

    def _new(self, kind: str, name: str, taken: Mapping[str, object]) -> None:
        entry = taken.get(name)
        if entry is None:
            return
        if getattr(entry, "source", "") == "config":
            raise ConfigManaged(f"{kind} {name} {_CHANGE_IN_CONFIG}")
        raise DirectoryConflict(f"{kind} {name} already exists")

    def _admin_entry(
        self, kind: str, name: str, entries: Mapping[Any, object], key: object = None
    ) -> object:
        entry = entries.get(name if key is None else key)
        if entry is None:
            raise DirectoryNotFound(f"no {kind} {name}")
        if getattr(entry, "source", "") == "config":
            raise ConfigManaged(f"{kind} {name} {_CHANGE_IN_CONFIG}")
        return entry

    def _admin_user(self, name: str) -> UserEntry:
        entry = self._admin_entry("user", name, self.users)
        assert isinstance(entry, UserEntry)
        return entry

    def _known_role(self, role: str) -> None:
        if role not in self.roles:
            raise DirectoryInvalid(f"unknown role {role!r}{_declared(self.roles)}")

    def _key_free(self, line: str) -> bytes:
        try:
            key = parse_public_key(line)
        except KeyMaterialError as exc:
            raise DirectoryInvalid(f"not an OpenSSH public key line: {exc}") from None
        owner = self.key_owners.get(key.blob)
        if owner is not None:
            raise DirectoryConflict(f"key {key.fingerprint} is already registered to user {owner}")
        return key.blob

    def _check_selectors(self, role: RoleConfig) -> None:
        for selector in role.hosts:
            kind, sep, value = selector.partition(":")
            if not sep and selector != "*":
                kind, value = "name", selector
            known: Mapping[str, object] | None = None
            if kind == "name":
                known = self.hosts
            elif kind == "region":
                known = self.regions
            if known is not None and value not in known:
                noun = "host" if kind == "name" else "region"
                raise DirectoryInvalid(f"hosts: unknown {noun} {value!r}{_declared(known)}")

    def _check_remove_team(self, name: str) -> None:
        team = self._admin_entry("team", name, self.teams)
        assert isinstance(team, TeamEntry)
        if team.members:
            raise DirectoryConflict(f"team {name} has members ({', '.join(team.members)})")
        if ("team", name) in self.budgets:
            raise DirectoryConflict(f"team {name} has a budget; remove it first")

    def _check_dataset(self, ds: DatasetConfig) -> None:
        self._new("data set", ds.name, self.datasets)
        for region in ds.regions:
            if region not in self.regions:
                raise DirectoryInvalid(
                    f"regions: unknown region {region!r}{_declared(self.regions)}"
                )
        for country in ds.countries:
            if not _COUNTRY.fullmatch(country.upper()):
                raise DirectoryInvalid(f"countries: {country!r} is not an ISO 3166 alpha-2 code")
        if not ds.regions and not ds.countries:
            raise DirectoryInvalid(
                "give the regions or countries where the data set may be processed"
            )

    def _check_budget(self, b: BudgetConfig) -> None:
        kind, owner = budget_owner(b)
        existing = self.budgets.get((kind, owner))
        if existing is not None and existing.source == "config":
            raise ConfigManaged(f"budget of {kind} {owner} {_CHANGE_IN_CONFIG}")
        if kind == "user" and owner not in self.users:
            raise DirectoryInvalid(f"unknown user {owner!r}")
        if kind == "team" and owner not in self.teams:
            raise DirectoryInvalid(f"unknown team {owner!r}{_declared(self.teams)}")
        if b.daily is None and b.monthly is None:
            raise DirectoryInvalid("give a daily or a monthly limit, or both")

    def _check_host(self, host: HostConfig) -> None:
        self._new("host", host.name, self.hosts)
        if host.region not in self.regions:
            raise DirectoryInvalid(
                f"region: unknown region {host.region!r}{_declared(self.regions)}"
            )
        g = self.settings.gateway
        if (host.address, host.port) in {(g.ssh_host, g.ssh_port), (g.api_host, g.api_port)}:
            raise DirectoryInvalid(f"{host.address}:{host.port} is the gateway's own listener")
        for other in self.hosts.values():
            if (other.config.address, other.config.port) == (host.address, host.port):
                raise DirectoryConflict(
                    f"{host.address}:{host.port} is already host {other.config.name}'s address"
                )
        for token in host.residency:
            if not _COUNTRY.fullmatch(token) and token not in self.regions:
                raise DirectoryInvalid(
                    f"residency: unknown region {token!r}{_declared(self.regions)}"
                )

    def _check_remove_host(self, name: str) -> None:
        self._admin_entry("host", name, self.hosts)
        for role in self.roles.values():
            if f"name:{name}" in role.config.hosts or name in role.config.hosts:
                raise DirectoryConflict(
                    f"host {name} is named by role {role.config.name}; change the role first"
                )


def _declared(names: Iterable[str]) -> str:
    found = sorted(names)
    return f" (known: {', '.join(found)})" if found else " (none declared)"
