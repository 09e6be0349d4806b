"""The directory's tables: what admins added at run time, read whole and changed one step at a time.

``load`` reads every directory table in one transaction, so a snapshot never
mixes two versions. ``apply`` makes one change in one writer transaction and
increments ``directory_version`` in it, but only if the version is still the
one the change was checked against (optimistic concurrency): another gateway
or a local ``gpuhop-gateway admin`` command that changed the directory in the
meantime makes it raise ``VersionMoved``, and the caller checks again. Rows
whose JSON no longer validates (written by a newer gpuhop, or edited by hand)
are skipped with a warning instead of stopping the gateway.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Connection

from gateway.adapters.storage.engine import Database
from gateway.adapters.storage.schema import (
    directory_budgets,
    directory_datasets,
    directory_grants,
    directory_hosts,
    directory_keys,
    directory_roles,
    directory_teams,
    directory_users,
    directory_version,
)
from gateway.config import changes as ch
from gateway.config.directory import BudgetConfig, DatasetConfig, HostConfig, RoleConfig
from gateway.domain.inventory.keys import parse_public_key
from gateway.errors import DirectoryConflict

log = structlog.get_logger("gpuhop.directory")

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class VersionMoved(DirectoryConflict):
    """The directory changed between checking a change and writing it."""


@dataclass(frozen=True, slots=True)
class Stamp:
    """When a stored entry was made, and by whom."""

    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class StoredUser:
    name: str
    team: str
    stamp: Stamp


@dataclass(frozen=True, slots=True)
class StoredKey:
    user: str
    fingerprint: str
    line: str
    stamp: Stamp


@dataclass(frozen=True, slots=True)
class StoredGrant:
    user: str
    role: str
    stamp: Stamp


@dataclass(frozen=True, slots=True)
class StoredTeam:
    name: str
    stamp: Stamp


@dataclass(frozen=True, slots=True)
class Stored(Generic[T]):
    """A stored role, data set, budget or host: its config model and stamp."""

    config: T
    stamp: Stamp


@dataclass(frozen=True, slots=True)
class StoredDirectory:
    """Everything in the directory tables at one version."""

    version: int = 0
    users: tuple[StoredUser, ...] = ()
    keys: tuple[StoredKey, ...] = ()
    grants: tuple[StoredGrant, ...] = ()
    teams: tuple[StoredTeam, ...] = ()
    roles: tuple[Stored[RoleConfig], ...] = ()
    datasets: tuple[Stored[DatasetConfig], ...] = ()
    budgets: tuple[Stored[BudgetConfig], ...] = ()
    hosts: tuple[Stored[HostConfig], ...] = ()


def _stamp(row: Any) -> Stamp:
    return Stamp(float(row.created_at), str(row.created_by))


def _models(conn: Connection, table: sa.Table, model: type[M]) -> tuple[Stored[M], ...]:
    out = []
    for row in conn.execute(sa.select(table).order_by(table.c.name)):
        try:
            out.append(Stored(model.model_validate_json(row.spec), _stamp(row)))
        except ValidationError as exc:
            log.warning(
                "skipping invalid directory row",
                table=table.name,
                name=row.name,
                error=" ".join(str(exc).split())[:300],
            )
    return tuple(out)


def _load(conn: Connection) -> StoredDirectory:
    version = conn.execute(sa.select(directory_version.c.version)).scalar()
    users = tuple(
        StoredUser(r.name, r.team, _stamp(r))
        for r in conn.execute(sa.select(directory_users).order_by(directory_users.c.name))
    )
    keys = tuple(
        StoredKey(r.user, r.fingerprint, r.key_line, _stamp(r))
        for r in conn.execute(
            sa.select(directory_keys).order_by(directory_keys.c.user, directory_keys.c.created_at)
        )
    )
    grants = tuple(
        StoredGrant(r.user, r.role, _stamp(r))
        for r in conn.execute(
            sa.select(directory_grants).order_by(
                directory_grants.c.user, directory_grants.c.created_at, directory_grants.c.role
            )
        )
    )
    teams = tuple(
        StoredTeam(r.name, _stamp(r))
        for r in conn.execute(sa.select(directory_teams).order_by(directory_teams.c.name))
    )
    budgets = []
    for r in conn.execute(
        sa.select(directory_budgets).order_by(
            directory_budgets.c.owner_kind, directory_budgets.c.owner
        )
    ):
        owner = {str(r.owner_kind): r.owner}
        budgets.append(Stored(BudgetConfig(**owner, daily=r.daily, monthly=r.monthly), _stamp(r)))
    return StoredDirectory(
        version=int(version or 0),
        users=users,
        keys=keys,
        grants=grants,
        teams=teams,
        roles=_models(conn, directory_roles, RoleConfig),
        datasets=_models(conn, directory_datasets, DatasetConfig),
        budgets=tuple(budgets),
        hosts=_models(conn, directory_hosts, HostConfig),
    )


def _spec(model: BaseModel) -> str:
    return json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


class DirectoryStore:
    """The directory tables of one storage database; ``clock`` is injectable for tests."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def version(self) -> int:
        """The directory's version: one more after every change (what replicas poll).

        >>> import asyncio
        >>> from gateway.adapters.storage import open_storage
        >>> async def main() -> int:
        ...     storage = await open_storage("memory://")
        ...     try:
        ...         return await storage.directory.version()
        ...     finally:
        ...         await storage.close()
        >>> asyncio.run(main())
        0
        """
        query = sa.select(directory_version.c.version)
        return int(await self._db.read(lambda conn: conn.execute(query).scalar()) or 0)

    async def load(self) -> StoredDirectory:
        """Every stored entry, at one version."""
        return await self._db.read(_load)

    async def apply(self, change: ch.Change, expected_version: int, actor: str) -> int:
        """Write ``change`` if the directory is still at ``expected_version``; the new version.

        The caller has checked the change against that version; ``VersionMoved``
        says another writer came first (nothing was written).
        """
        now = self._clock()

        def run(conn: Connection) -> int:
            bumped = conn.execute(
                directory_version.update()
                .where(directory_version.c.id == 1, directory_version.c.version == expected_version)
                .values(version=directory_version.c.version + 1, changed_at=now)
            )
            if bumped.rowcount != 1:
                raise VersionMoved("the directory changed meanwhile; try again")
            _write(conn, change, {"created_at": now, "created_by": actor})
            return expected_version + 1

        return await self._db.write(run)


def _write(conn: Connection, change: ch.Change, stamp: dict[str, object]) -> None:
    """The SQL for one (already checked) change."""
    match change:
        case ch.AddUser(name=name, team=team, roles=roles, keys=keys):
            conn.execute(directory_users.insert().values(name=name, team=team, **stamp))
            for line in keys:
                _insert_key(conn, name, line, stamp)
            for role in roles:
                conn.execute(directory_grants.insert().values(user=name, role=role, **stamp))
        case ch.RemoveUser(name=name):
            # Keys and grants go with the user (explicitly: SQLite may run without FK checks).
            conn.execute(directory_keys.delete().where(directory_keys.c.user == name))
            conn.execute(directory_grants.delete().where(directory_grants.c.user == name))
            conn.execute(directory_users.delete().where(directory_users.c.name == name))
        case ch.AddKey(user=user, key=line):
            _insert_key(conn, user, line, stamp)
        case ch.RemoveKey(user=user, fingerprint=fp):
            conn.execute(
                directory_keys.delete().where(
                    directory_keys.c.user == user, directory_keys.c.fingerprint == fp
                )
            )
        case ch.AddRole(role=role):
            conn.execute(directory_roles.insert().values(name=role.name, spec=_spec(role), **stamp))
        case ch.RemoveRole(name=name):
            conn.execute(directory_roles.delete().where(directory_roles.c.name == name))
        case ch.Grant(user=user, role=role):
            conn.execute(directory_grants.insert().values(user=user, role=role, **stamp))
        case ch.Revoke(user=user, role=role):
            conn.execute(
                directory_grants.delete().where(
                    directory_grants.c.user == user, directory_grants.c.role == role
                )
            )
        case ch.AddTeam(name=name):
            conn.execute(directory_teams.insert().values(name=name, **stamp))
        case ch.RemoveTeam(name=name):
            conn.execute(directory_teams.delete().where(directory_teams.c.name == name))
        case ch.AddDataset(dataset=ds):
            conn.execute(directory_datasets.insert().values(name=ds.name, spec=_spec(ds), **stamp))
        case ch.RemoveDataset(name=name):
            conn.execute(directory_datasets.delete().where(directory_datasets.c.name == name))
        case ch.SetBudget(budget=b):
            kind, owner = ("user", b.user) if b.user else ("team", b.team)
            _delete_budget(conn, kind, owner)
            conn.execute(
                directory_budgets.insert().values(
                    owner_kind=kind, owner=owner, daily=b.daily, monthly=b.monthly, **stamp
                )
            )
        case ch.RemoveBudget(kind=kind, owner=owner):
            _delete_budget(conn, kind, owner)
        case ch.AddHost(host=host):
            conn.execute(directory_hosts.insert().values(name=host.name, spec=_spec(host), **stamp))
        case ch.RemoveHost(name=name):
            conn.execute(directory_hosts.delete().where(directory_hosts.c.name == name))


def _insert_key(conn: Connection, user: str, line: str, stamp: dict[str, object]) -> None:
    key = parse_public_key(line)
    conn.execute(
        directory_keys.insert().values(
            fingerprint=key.fingerprint, user=user, key_line=line.strip(), **stamp
        )
    )


def _delete_budget(conn: Connection, kind: str, owner: str) -> None:
    conn.execute(
        directory_budgets.delete().where(
            directory_budgets.c.owner_kind == kind, directory_budgets.c.owner == owner
        )
    )
