"""The directory: config and stored entries merged, changes checked, written and audited.

Storage is the in-package ``memory://`` fake here; the integration suite runs
the same service on SQLite and PostgreSQL behind a real gateway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.adapters.audit.memory import MemoryAuditStore
from gateway.adapters.storage import Storage, open_storage
from gateway.config import changes as ch
from gateway.config.directory import BudgetConfig, DatasetConfig, HostConfig, RoleConfig
from gateway.config.loader import Settings
from gateway.errors import (
    ConfigManaged,
    DirectoryConflict,
    DirectoryError,
    DirectoryInvalid,
    DirectoryNotFound,
    StorageError,
)
from gateway.services.directory import Actor, DirectoryService
from gateway.services.directoryview import DirectoryView

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAkZXCIljCI4m4QgaFavOri6apUXmKVGDweSaO7XR9Xt a"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl b"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBk9mlM6jN2KcHl7jbCIBq3ZoUr5ZgP2F6FA6y8m7DnE"

SETTINGS = Settings(
    regions=[{"name": "sg", "country": "SG"}, {"name": "my", "country": "MY"}],
    hosts=[{"name": "sg-1", "region": "sg", "address": "10.0.0.1", "host_key": HOST_KEY}],
    roles=[{"name": "dev", "hosts": ["*"], "accounts": ["root"]}],
    users=[{"name": "cfg", "roles": ["dev"], "keys": [KEY_B], "team": "ml"}],
    budgets=[{"team": "ml", "daily": 10}],
)


@pytest.fixture
async def service() -> AsyncIterator[tuple[DirectoryService, MemoryAuditStore, Storage]]:
    storage = await open_storage("memory://")
    audit = MemoryAuditStore()
    svc = DirectoryService(SETTINGS, storage.directory, audit)
    await svc.load()
    try:
        yield svc, audit, storage
    finally:
        await storage.close()


OPS = Actor("ops", "tok1", "127.0.0.1:5000")


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (ch.AddUser("cfg"), ConfigManaged, "declared in the config file"),
        (ch.RemoveUser("cfg"), ConfigManaged, "declared in the config file"),
        (ch.Grant("cfg", "dev"), ConfigManaged, "user cfg"),
        (ch.RemoveUser("nobody"), DirectoryNotFound, "no user nobody"),
        (ch.AddUser("x", roles=("nope",)), DirectoryInvalid, "unknown role 'nope' (known: dev)"),
        (ch.AddUser("x", team="nope"), DirectoryInvalid, "unknown team 'nope' (known: ml)"),
        (ch.AddUser("x", keys=(KEY_B,)), DirectoryConflict, "already registered to user cfg"),
        (ch.AddUser("x", keys=(KEY_A, KEY_A)), DirectoryInvalid, "given twice"),
        (ch.AddUser("x", keys=("ssh-ed25519 AAAA",)), DirectoryInvalid, "keys.0"),
        (ch.AddUser("a b"), DirectoryInvalid, "is not a name"),
        (ch.RemoveRole("dev"), ConfigManaged, "role dev"),
        (ch.AddRole(RoleConfig(name="r", hosts=("name:zz",))), DirectoryInvalid, "unknown host"),
        (
            ch.AddRole(RoleConfig(name="r", hosts=("region:zz",))),
            DirectoryInvalid,
            "unknown region",
        ),
        (ch.RemoveTeam("ml"), ConfigManaged, "team ml"),
        (ch.SetBudget(BudgetConfig(team="ml", daily=1)), ConfigManaged, "budget of team ml"),
        (ch.SetBudget(BudgetConfig(user="nobody", daily=1)), DirectoryInvalid, "unknown user"),
        (ch.SetBudget(BudgetConfig(user="cfg")), DirectoryInvalid, "daily or a monthly"),
        (ch.AddDataset(DatasetConfig(name="d")), DirectoryInvalid, "regions or countries"),
        (ch.AddDataset(DatasetConfig(name="d", countries=("S1",))), DirectoryInvalid, "ISO"),
        (ch.RemoveHost("sg-1"), ConfigManaged, "host sg-1"),
        (
            ch.AddHost(HostConfig(name="h", region="zz", address="10.0.0.2", host_key=HOST_KEY)),
            DirectoryInvalid,
            "unknown region 'zz'",
        ),
        (
            ch.AddHost(HostConfig(name="h", region="sg", address="10.0.0.1", host_key=HOST_KEY)),
            DirectoryConflict,
            "already host sg-1's address",
        ),
    ],
)
async def test_refusals_are_one_line_and_change_nothing(
    service: tuple[DirectoryService, MemoryAuditStore, Storage],
    change: ch.Change,
    error: type[DirectoryError],
    words: str,
) -> None:
    svc, audit, storage = service
    with pytest.raises(error) as info:
        await svc.apply(change, OPS)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert await storage.directory.version() == 0
    assert await audit.list() == []


async def test_changes_are_audited_versioned_and_merged(
    service: tuple[DirectoryService, MemoryAuditStore, Storage],
) -> None:
    _, audit, storage = service
    seen: list[int] = []
    svc = DirectoryService(
        SETTINGS, storage.directory, audit, on_change=lambda view: seen.append(view.version)
    )
    await svc.apply(ch.AddTeam("infra"), OPS)
    await svc.apply(ch.AddUser("dana", "infra", ("dev",), (KEY_A,)), OPS)
    host = HostConfig(name="my-1", region="my", address="10.0.0.9", host_key=HOST_KEY)
    await svc.apply(ch.AddHost(host), OPS)
    await svc.apply(ch.AddRole(RoleConfig(name="my-only", hosts=("name:my-1",))), OPS)
    view = await svc.apply(ch.Grant("dana", "my-only"), OPS)
    assert view.version == 5 and seen == [0, 1, 2, 3, 4, 5]
    inv = view.inventory()
    assert [r.name for r in inv.roles_of("dana")] == ["dev", "my-only"]
    assert inv.user_for_key(KEY_A) is not None and inv.host("my-1") is not None
    assert view.users["cfg"].source == "config" and view.users["dana"].source == "admin"
    assert view.teams["infra"].members == ("dana",)
    with pytest.raises(DirectoryConflict, match="named by role my-only"):
        await svc.apply(ch.RemoveHost("my-1"), OPS)
    with pytest.raises(DirectoryConflict, match="granted to dana"):
        await svc.apply(ch.RemoveRole("my-only"), OPS)
    view = await svc.apply(ch.RemoveUser("dana"), OPS)
    assert view.inventory().user("dana") is None and view.inventory().user_for_key(KEY_A) is None
    events = await audit.list(limit=100)
    assert [e.kind for e in events] == [
        "admin.team.add",
        "admin.user.add",
        "admin.host.add",
        "admin.role.add",
        "admin.role.grant",
        "admin.user.remove",
    ]
    assert all(e.actor == "ops" and e.data["by_token"] == "tok1" for e in events)
    # A second process on the same storage sees the same directory.
    other = DirectoryService(SETTINGS, storage.directory, MemoryAuditStore())
    assert (await other.load()).version == 6


async def test_audit_failure_changes_nothing(
    service: tuple[DirectoryService, MemoryAuditStore, Storage],
) -> None:
    svc, audit, storage = service
    await audit.close()  # appends now fail
    with pytest.raises(StorageError, match="audit store is closed"):
        await svc.apply(ch.AddTeam("infra"), OPS)
    assert await storage.directory.version() == 0
    assert "infra" not in (await svc.load()).teams


def test_config_wins_over_a_clashing_stored_entry() -> None:
    from gateway.adapters.storage.directory import Stamp, StoredDirectory, StoredUser

    stored = StoredDirectory(version=3, users=(StoredUser("cfg", "", Stamp(0.0, "ops")),))
    view = DirectoryView.build(SETTINGS, stored)
    assert view.users["cfg"].source == "config" and view.version == 3
