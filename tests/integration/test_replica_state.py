"""Several gateway replicas on one database share one truth: GPU leases, spend, sessions.

Each replica here has its own storage engine (its own connection pool) on one
real PostgreSQL (and, where the contract is shared, one SQLite file), as two
gateway processes would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway.inventory.hosts import Inventory
from gateway.inventory.leases import Lease, LeaseRefused
from gateway.live import LiveState
from gateway.models import Host
from gateway.storage import Storage, migrate, open_storage
from tests.integration.pg import PgServer

pytestmark = pytest.mark.postgres

H8 = Host("sg-1", "sg", "127.0.0.1", gpu_count=8, price_per_gpu_hour=3.6)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gw.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.create_database()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def replicas(url: str) -> AsyncIterator[Callable[[str], Awaitable[Storage]]]:
    """Storage as replica ``name`` opens it: ``open("a")``, ``open("b")``."""
    migrate.upgrade(url)  # once up front, as an operator would before starting replicas
    opened: list[Storage] = []
    clock = Clock()

    async def open_replica(name: str) -> Storage:
        storage = await open_storage(url, clock, node=name, replica_timeout_s=15.0)
        await storage.replicas.heartbeat()
        opened.append(storage)
        return storage

    yield open_replica
    for storage in opened:
        await storage.close()


def live_on(storage: Storage) -> LiveState:
    return LiveState(Inventory(hosts=(H8,)), None, lease_store=storage.leases)


async def test_sixteen_requests_on_two_replicas_get_eight_gpus_once_each(
    replicas: Callable[[str], Awaitable[Storage]],
) -> None:
    a, b = live_on(await replicas("a")), live_on(await replicas("b"))
    results = await asyncio.gather(
        *((a if i % 2 else b).lease(H8, f"s{i:02}", 1) for i in range(16))
    )
    granted = [r for r in results if isinstance(r, Lease)]
    assert sorted(g for r in granted for g in r.gpus) == list(range(8))
    assert len([r for r in results if isinstance(r, LeaseRefused)]) == 8
    # Both replicas see the same eight leases.
    assert await a.leases.leases() == await b.leases.leases()
    assert len(await a.leases.leases()) == 8


async def test_release_on_one_replica_frees_the_gpu_for_the_other(
    replicas: Callable[[str], Awaitable[Storage]],
) -> None:
    a, b = live_on(await replicas("a")), live_on(await replicas("b"))
    held = await a.lease(H8, "big", 8)
    assert isinstance(held, Lease) and held.gpus == tuple(range(8))
    refused = await b.lease(H8, "other", 1)
    assert isinstance(refused, LeaseRefused)
    assert "only 0 of 8 usable GPU(s) on sg-1 free (8 leased" in refused.reason
    await a.release("big")
    assert isinstance(await b.lease(H8, "other", 1), Lease)


async def test_a_dead_replicas_leases_are_void_after_the_timeout(
    replicas: Callable[[str], Awaitable[Storage]],
) -> None:
    sa_, sb = await replicas("a"), await replicas("b")
    a, b = live_on(sa_), live_on(sb)
    assert isinstance(await a.lease(H8, "s-a", 8), Lease)
    clock = sb.replicas._clock
    assert isinstance(clock, Clock)
    clock.now += 10.0  # a stops beating (kill -9); b goes on
    await sb.replicas.heartbeat()
    assert isinstance(await b.lease(H8, "s-b", 1), LeaseRefused)  # a might still be alive
    clock.now += 6.0  # a's last heartbeat is now older than the 15 s timeout
    await sb.replicas.heartbeat()
    got = await b.lease(H8, "s-b", 8)
    assert isinstance(got, Lease) and got.gpus == tuple(range(8))
    assert [x.session_id for x in await a.leases.leases()] == ["s-b"]
