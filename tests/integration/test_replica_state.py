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

from gateway.adapters.storage import Storage, migrate, open_storage
from gateway.domain.inventory.hosts import Inventory
from gateway.domain.inventory.leases import Lease, LeaseRefused
from gateway.domain.metering.budgets import BudgetLimits
from gateway.domain.models import Host, User
from gateway.services.live import LiveState
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


def metered_on(storage: Storage, clock: Clock) -> LiveState:
    """A replica's live state as the gateway wires it: leases, records and running costs."""
    live = LiveState(
        Inventory(hosts=(H8,), users=(User("alice", team="ml"),)),
        None,
        budgets={("user", "alice"): BudgetLimits(daily=10.0)},
        clock=clock,
        lease_store=storage.leases,
    )
    live.session_store = storage.sessions
    live.live_costs = storage.live_costs
    return live


async def test_a_budget_spent_through_one_replica_refuses_on_the_other(
    replicas: Callable[[str], Awaitable[Storage]],
) -> None:
    sa_, sb = await replicas("a"), await replicas("b")
    clock = sa_.replicas._clock
    assert isinstance(clock, Clock)
    a, b = metered_on(sa_, clock), metered_on(sb, clock)
    a.start_meter("s-a", "alice", "ml", H8, 8)  # 8 GPUs at $3.60: $28.80 an hour, on a
    await a.settle()
    assert (await b.budget("alice", "ml")).allowed
    clock.now += 1800.0  # half an hour: $14.40, past the $10 day
    await sb.replicas.heartbeat()
    await sa_.replicas.heartbeat()
    decision = await b.budget("alice", "ml")
    assert not decision.allowed, decision.reason
    assert "10.00 USD daily" in decision.reason
    today, _ = await b.spent("user", "alice")
    assert today == pytest.approx(14.4)
    a.stop_meter("s-a")
    await a.settle()
    assert await b.spent("user", "alice") == (0.0, 0.0)  # the final cost is the record's


async def test_a_dead_replicas_running_costs_stop_counting(
    replicas: Callable[[str], Awaitable[Storage]],
) -> None:
    sa_, sb = await replicas("a"), await replicas("b")
    clock = sa_.replicas._clock
    assert isinstance(clock, Clock)
    a, b = metered_on(sa_, clock), metered_on(sb, clock)
    a.start_meter("s-a", "alice", "ml", H8, 1)
    await a.settle()
    clock.now += 14.0
    await sb.replicas.heartbeat()
    assert (await b.spent("user", "alice"))[0] == pytest.approx(3.6 * 14 / 3600)
    clock.now += 2.0  # a's heartbeat is past the timeout
    assert await b.spent("user", "alice") == (0.0, 0.0)


async def test_one_users_passthrough_hold_is_shared_by_replicas_and_excludes_others(
    replicas: Callable[[str], Awaitable[Storage]],
) -> None:
    sa_, sb = await replicas("a"), await replicas("b")
    a, b = live_on(sa_), live_on(sb)
    first = await a.lease(H8, "pt-alice@sg-1", 8, share=True)
    joined = await b.lease(H8, "pt-alice@sg-1", 8, share=True)
    assert isinstance(first, Lease) and isinstance(joined, Lease)
    assert first.gpus == joined.gpus == tuple(range(8))
    assert isinstance(await b.lease(H8, "pt-bob@sg-1", 8, share=True), LeaseRefused)
    await a.release("pt-alice@sg-1")  # b still serves alice: the GPUs stay hers
    assert isinstance(await a.lease(H8, "s-bob", 1), LeaseRefused)
    await b.release("pt-alice@sg-1")
    assert isinstance(await a.lease(H8, "s-bob", 1), Lease)
