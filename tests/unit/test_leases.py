"""GPU leases: never two on one GPU, also under concurrent requests; clear refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from gateway.domain.inventory.leases import (
    Lease,
    LeaseAllocator,
    LeaseRefused,
    MemoryLeaseStore,
    cuda_visible_devices,
    host_environment,
    lease_environment,
)

FOUR = (0, 1, 2, 3)


class SlowStore(MemoryLeaseStore):
    """Yields to the loop inside every call, as a database store would."""

    async def leases(self, host: str | None = None) -> tuple[Lease, ...]:
        await asyncio.sleep(0)
        found = await super().leases(host)
        await asyncio.sleep(0)
        return found

    async def insert(self, lease: Lease) -> bool:
        await asyncio.sleep(0)
        return await super().insert(lease)


class NoCheckStore(SlowStore):
    """A store that forgets to refuse overlaps: only the allocator's lock protects it."""

    async def insert(self, lease: Lease) -> bool:
        await asyncio.sleep(0)
        self._leases[lease.lease_id] = lease
        return True


def gpus_of(results: Iterable[Lease | LeaseRefused]) -> list[int]:
    return [g for r in results if isinstance(r, Lease) for g in r.gpus]


@pytest.mark.parametrize("store", [MemoryLeaseStore, SlowStore, NoCheckStore])
async def test_twenty_concurrent_requests_on_four_gpus(store: type[MemoryLeaseStore]) -> None:
    allocator = LeaseAllocator(store())
    results = await asyncio.gather(
        *(allocator.acquire("sg-1", f"s{i:02}", 1, FOUR) for i in range(20))
    )
    leased = gpus_of(results)
    assert sorted(leased) == [0, 1, 2, 3]  # every GPU once, none twice
    refused = [r for r in results if isinstance(r, LeaseRefused)]
    assert len(refused) == 16
    assert {r.reason for r in refused} == {
        "1 GPU(s) requested, only 0 of 4 usable GPU(s) on sg-1 free (4 leased to other sessions)"
    }
    assert len(await allocator.leases("sg-1")) == 4


async def test_concurrent_multi_gpu_requests_never_overlap() -> None:
    allocator = LeaseAllocator(SlowStore())
    sizes = [2, 3, 1, 2, 4, 1, 1, 2, 3, 1] * 2
    results = await asyncio.gather(
        *(allocator.acquire("sg-1", f"s{i}", n, range(8)) for i, n in enumerate(sizes))
    )
    leased = gpus_of(results)
    assert len(leased) == len(set(leased)) and set(leased) <= set(range(8))
    for result, n in zip(results, sizes, strict=True):
        assert isinstance(result, LeaseRefused) or len(result.gpus) == n


async def test_hosts_are_independent() -> None:
    allocator = LeaseAllocator()
    a = await allocator.acquire("sg-1", "s1", 2, FOUR)
    b = await allocator.acquire("my-1", "s1", 2, FOUR)
    assert isinstance(a, Lease) and isinstance(b, Lease)
    assert a.gpus == b.gpus == (0, 1)
    assert (a.lease_id, b.lease_id) == ("sg-1/s1", "my-1/s1")


async def test_lowest_free_indices_and_environment() -> None:
    allocator = LeaseAllocator()
    first = await allocator.acquire("sg-1", "s1", 1, FOUR, at=12.5)
    second = await allocator.acquire("sg-1", "s2", 2, (3, 2, 1, 0, 2))
    assert isinstance(first, Lease) and isinstance(second, Lease)
    assert (first.gpus, first.acquired_at, second.gpus) == ((0,), 12.5, (1, 2))
    assert cuda_visible_devices(second) == "1,2"
    assert lease_environment(second) == (
        ("CUDA_DEVICE_ORDER", "PCI_BUS_ID"),
        ("CUDA_VISIBLE_DEVICES", "1,2"),
    )


@pytest.mark.parametrize(
    ("n", "usable", "reason"),
    [
        (0, FOUR, "ask for at least one GPU (asked for 0)"),
        (-2, FOUR, "ask for at least one GPU (asked for -2)"),
        (1, (), "sg-1 has no usable GPUs right now; 1 requested"),
        (
            3,
            FOUR,
            "3 GPU(s) requested, only 2 of 4 usable GPU(s) on sg-1 free "
            "(2 leased to other sessions)",
        ),
        (
            3,
            (0, 1, 2),
            "3 GPU(s) requested, only 1 of 3 usable GPU(s) on sg-1 free "
            "(2 leased to other sessions)",
        ),
        (
            5,
            (2, 3),
            "5 GPU(s) requested, only 2 of 2 usable GPU(s) on sg-1 free "
            "(0 leased to other sessions)",
        ),
    ],
)
async def test_refusals_say_why(n: int, usable: tuple[int, ...], reason: str) -> None:
    allocator = LeaseAllocator()
    assert isinstance(await allocator.acquire("sg-1", "other", 2, (0, 1)), Lease)
    result = await allocator.acquire("sg-1", "me", n, usable)
    assert result == LeaseRefused("sg-1", "me", reason)


async def test_one_lease_per_session_and_host() -> None:
    allocator = LeaseAllocator()
    await allocator.acquire("sg-1", "s1", 2, FOUR)
    again = await allocator.acquire("sg-1", "s1", 1, FOUR)
    assert again == LeaseRefused(
        "sg-1", "s1", "session s1 already holds GPU(s) 0,1 on sg-1; release them first"
    )


async def test_store_conflict_becomes_a_refusal() -> None:
    """Another replica claimed the GPU between our read and our insert."""

    class Racing(MemoryLeaseStore):
        async def leases(self, host: str | None = None) -> tuple[Lease, ...]:
            found = await super().leases(host)
            if not found:
                self._leases["sg-1/elsewhere"] = Lease("sg-1", "elsewhere", (0,))
            return found

    allocator = LeaseAllocator(Racing())
    result = await allocator.acquire("sg-1", "s1", 1, FOUR)
    assert isinstance(result, LeaseRefused)
    assert result.reason == "GPU(s) 0 on sg-1 were leased elsewhere at the same moment; try again"


async def test_release_frees_gpus_for_the_next_session() -> None:
    allocator = LeaseAllocator()
    for i in range(4):
        await allocator.acquire("sg-1", f"s{i}", 1, FOUR)
    await allocator.acquire("my-1", "s1", 2, FOUR)
    assert isinstance(await allocator.acquire("sg-1", "late", 1, FOUR), LeaseRefused)
    released = await allocator.release("s1")
    assert sorted(r.lease_id for r in released) == ["my-1/s1", "sg-1/s1"]
    assert await allocator.release("s1") == ()
    late = await allocator.acquire("sg-1", "late", 1, FOUR)
    assert isinstance(late, Lease) and late.gpus == (1,)


async def test_release_on_one_host_only() -> None:
    allocator = LeaseAllocator()
    await allocator.acquire("sg-1", "s1", 1, FOUR)
    await allocator.acquire("my-1", "s1", 1, FOUR)
    assert [r.host for r in await allocator.release("s1", host="my-1")] == ["my-1"]
    assert [x.host for x in await allocator.leases()] == ["sg-1"]


async def test_reaper_releases_leases_of_sessions_that_are_gone() -> None:
    allocator = LeaseAllocator()
    for i in range(4):
        await allocator.acquire("sg-1", f"s{i}", 1, FOUR)
    await allocator.acquire("my-1", "s9", 1, FOUR)
    reaped = await allocator.reap({"s1", "s3"})
    assert sorted(r.lease_id for r in reaped) == ["my-1/s9", "sg-1/s0", "sg-1/s2"]
    assert [(x.session_id, x.gpus) for x in await allocator.leases()] == [
        ("s1", (1,)),
        ("s3", (3,)),
    ]
    assert await allocator.reap({"s1", "s3"}) == ()
    assert await allocator.reap(set()) != ()
    assert await allocator.leases() == ()


async def test_reaper_and_acquire_race_safely() -> None:
    allocator = LeaseAllocator(SlowStore())
    for i in range(4):
        await allocator.acquire("sg-1", f"old{i}", 1, FOUR)
    results = await asyncio.gather(
        allocator.reap(set()),
        *(allocator.acquire("sg-1", f"new{i}", 1, FOUR) for i in range(8)),
    )
    leased = gpus_of(r for r in results[1:] if isinstance(r, Lease | LeaseRefused))
    held = [g for lease in await allocator.leases("sg-1") for g in lease.gpus]
    assert len(held) == len(set(held)) and sorted(leased) == sorted(held)


@pytest.mark.parametrize(
    ("client", "lease", "expected"),
    [
        ({}, None, {"CUDA_VISIBLE_DEVICES": ""}),
        (
            {"LANG": "C", "CUDA_VISIBLE_DEVICES": "0,1,2,3", "CUDA_DEVICE_ORDER": "FASTEST_FIRST"},
            None,
            {"LANG": "C", "CUDA_VISIBLE_DEVICES": ""},
        ),
        (
            {"cuda_visible_devices": "0", "NVIDIA_VISIBLE_DEVICES": "all", "GPUHOP_FAKE": "1"},
            None,
            {"CUDA_VISIBLE_DEVICES": ""},
        ),
        (
            {
                "GPUHOP_GPUS": "2",
                "GPUHOP_DATA": "d",
                "GPUHOP_ENV": "e",
                "CUDA_VISIBLE_DEVICES": "3",
            },
            Lease("sg-1", "s1", (0, 2)),
            {
                "GPUHOP_GPUS": "2",
                "GPUHOP_DATA": "d",
                "GPUHOP_ENV": "e",
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                "CUDA_VISIBLE_DEVICES": "0,2",
            },
        ),
    ],
)
def test_host_environment_is_the_gateways(
    client: dict[str, str], lease: Lease | None, expected: dict[str, str]
) -> None:
    assert host_environment(client, lease) == expected
