"""GPU leases: which session holds which GPUs on which host.

A session that asks for N GPUs gets N that nobody else holds, or a refusal
with a reason; the remote side then sees them through ``lease_environment``.
Two guarantees, at two levels:

* within one gateway process, ``acquire`` runs under one ``asyncio.Lock`` per
  host, so the check ("which GPUs are free?") and the claim cannot interleave
  with another request for the same host;
* across gateway replicas, ``LeaseStore.insert`` must itself refuse a lease
  that overlaps a held one (a database store does so with a unique
  ``(host, gpu_index)`` constraint inside one transaction); ``acquire`` turns
  that into a refusal, never into a double lease.

Leases end when their session ends (``release``) and, as a safety net, when a
reaper finds their session gone (``reap`` with the live session ids). No I/O
or clock here: times are passed in, the store is a port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Lease:
    """GPUs (nvidia-smi indices, ascending) on one host, held by one session."""

    host: str
    session_id: str
    gpus: tuple[int, ...]
    acquired_at: float = 0.0  # caller's clock; for display and idle checks

    @property
    def lease_id(self) -> str:
        """One lease per session and host, so the pair names it."""
        return f"{self.host}/{self.session_id}"


@dataclass(frozen=True, slots=True)
class LeaseRefused:
    """Why no lease was given; shown to the user and audited verbatim."""

    host: str
    session_id: str
    reason: str
    conflict: bool = False  # the store refused: another replica claimed a GPU meanwhile


class LeaseStore(Protocol):
    """Where leases live: the gateway's database (``gateway.adapters.storage.leases``), or a
    dict for unit tests."""

    async def leases(self, host: str | None = None) -> tuple[Lease, ...]:
        """Held leases, of one host or of all.

        >>> await store.leases("sg-1")  # doctest: +SKIP
        (Lease(host='sg-1', session_id='s1', gpus=(0, 1), acquired_at=0.0),)
        """
        ...

    async def insert(self, lease: Lease) -> bool:
        """Store ``lease``; False (and nothing stored) if any of its GPUs is already held
        or its session already holds a lease on the host.

        >>> await store.insert(Lease("sg-1", "s1", (0,)))  # doctest: +SKIP
        True
        """
        ...

    async def delete(self, lease_ids: Iterable[str]) -> tuple[Lease, ...]:
        """Remove these leases; returns the ones that were held.

        >>> await store.delete(["sg-1/s1"])  # doctest: +SKIP
        (Lease(host='sg-1', session_id='s1', gpus=(0,), acquired_at=0.0),)
        """
        ...


class MemoryLeaseStore:
    """A ``LeaseStore`` in a dict, for unit tests: it cannot see other replicas."""

    def __init__(self) -> None:
        self._leases: dict[str, Lease] = {}

    async def leases(self, host: str | None = None) -> tuple[Lease, ...]:
        return tuple(lease for lease in self._leases.values() if host is None or lease.host == host)

    async def insert(self, lease: Lease) -> bool:
        held = {
            g for other in self._leases.values() if other.host == lease.host for g in other.gpus
        }
        if lease.lease_id in self._leases or held & set(lease.gpus):
            return False
        self._leases[lease.lease_id] = lease
        return True

    async def delete(self, lease_ids: Iterable[str]) -> tuple[Lease, ...]:
        return tuple(lease for lease_id in lease_ids if (lease := self._leases.pop(lease_id, None)))


class LeaseAllocator:
    """Hands out GPU leases per host; see the module docstring."""

    def __init__(self, store: LeaseStore | None = None) -> None:
        self.store: LeaseStore = store if store is not None else MemoryLeaseStore()
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, host: str) -> asyncio.Lock:
        return self._locks.setdefault(host, asyncio.Lock())

    async def acquire(
        self,
        host: str,
        session_id: str,
        n: int,
        free_indices: Iterable[int],
        at: float = 0.0,
        tries: int = 1,
        share: bool = False,
    ) -> Lease | LeaseRefused:
        """Lease ``n`` of ``free_indices`` (the host's usable GPUs) to ``session_id``.

        The lowest indices nobody holds are chosen, so the result is
        deterministic for a given state. When the store refuses because another
        replica claimed one of them meanwhile, the choice is made again from the
        store's new state, up to ``tries`` times in all. With ``share``, a lease of
        ``session_id`` that another replica holds is joined (its GPUs, whatever ``n``):
        one user's passthrough hold on a host is one lease, however many replicas serve it.
        """
        result = await self._acquire_once(host, session_id, n, free_indices, at, share)
        for _ in range(tries - 1):
            if not isinstance(result, LeaseRefused) or not result.conflict:
                break
            result = await self._acquire_once(host, session_id, n, free_indices, at, share)
        return result

    async def _acquire_once(
        self,
        host: str,
        session_id: str,
        n: int,
        free_indices: Iterable[int],
        at: float,
        share: bool,
    ) -> Lease | LeaseRefused:

        def refuse(reason: str) -> LeaseRefused:
            return LeaseRefused(host, session_id, reason)

        if n < 1:
            return refuse(f"ask for at least one GPU (asked for {n})")
        usable = sorted(set(free_indices))
        async with self._lock(host):
            held = await self.store.leases(host)
            mine = [lease for lease in held if lease.session_id == session_id]
            if mine and share:
                joined = Lease(host, session_id, mine[0].gpus, at)
                if await self.store.insert(joined):
                    return joined
            if mine:
                return refuse(
                    f"session {session_id} already holds GPU(s) {_indices(mine[0].gpus)} "
                    f"on {host}; release them first"
                )
            taken = {g for lease in held for g in lease.gpus}
            available = [i for i in usable if i not in taken]
            if len(available) < n:
                return refuse(_shortage(host, n, usable, available, taken))
            lease = Lease(host, session_id, tuple(available[:n]), at)
            if not await self.store.insert(lease):
                return LeaseRefused(
                    host,
                    session_id,
                    f"GPU(s) {_indices(lease.gpus)} on {host} were leased elsewhere "
                    "at the same moment; try again",
                    conflict=True,
                )
            return lease

    async def release(self, session_id: str, host: str | None = None) -> tuple[Lease, ...]:
        """End the session's leases (on ``host`` only, if given); returns what was released."""
        held = [lease for lease in await self.store.leases(host) if lease.session_id == session_id]
        return await self._delete(held)

    async def reap(self, live_session_ids: Collection[str]) -> tuple[Lease, ...]:
        """Release every lease whose session is not in ``live_session_ids``.

        Run it on a schedule and after a restart: a session that died without
        the gateway seeing it end must not keep its GPUs.
        """
        gone = [
            lease for lease in await self.store.leases() if lease.session_id not in live_session_ids
        ]
        return await self._delete(gone)

    async def leases(self, host: str | None = None) -> tuple[Lease, ...]:
        """Held leases, sorted by host and first GPU."""
        return tuple(sorted(await self.store.leases(host), key=lambda x: (x.host, x.gpus)))

    async def _delete(self, leases: Iterable[Lease]) -> tuple[Lease, ...]:
        released: list[Lease] = []
        by_host: dict[str, list[str]] = {}
        for lease in leases:
            by_host.setdefault(lease.host, []).append(lease.lease_id)
        for host in sorted(by_host):
            async with self._lock(host):
                released.extend(await self.store.delete(by_host[host]))
        return tuple(released)


def cuda_visible_devices(lease: Lease) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value for a lease: ``"0,2"``."""
    return ",".join(str(g) for g in lease.gpus)


def lease_environment(lease: Lease) -> tuple[tuple[str, str], ...]:
    """Environment for the remote session or container holding ``lease``.

    Leases use nvidia-smi's indices, which follow PCI bus order; CUDA numbers
    devices fastest-first unless told otherwise, so the order is pinned too.
    """
    return (
        ("CUDA_DEVICE_ORDER", "PCI_BUS_ID"),
        ("CUDA_VISIBLE_DEVICES", cuda_visible_devices(lease)),
    )


GATEWAY_OWNED_PREFIXES = ("CUDA_", "GPUHOP_", "NVIDIA_VISIBLE_DEVICES")
"""Variables only the gateway sets on a host: which GPUs a session may use."""

REQUEST_VARIABLES = frozenset({"GPUHOP_GPUS", "GPUHOP_DATA", "GPUHOP_ENV"})
"""What a client sends to *ask* (GPUs, data set, environment); read by the gateway,
passed on as asked."""


def gateway_owned(name: str) -> bool:
    """Whether ``name`` is the gateway's to set (a client's value never reaches a host)."""
    return name.upper().startswith(GATEWAY_OWNED_PREFIXES) and name not in REQUEST_VARIABLES


def host_environment(client_env: Mapping[str, str], lease: Lease | None) -> dict[str, str]:
    """The environment a session's host channel gets: the client's, less every variable
    the gateway owns, plus the lease's. Without a lease ``CUDA_VISIBLE_DEVICES`` is empty,
    so CUDA sees no device rather than whatever the host's default or the client said.

    >>> host_environment({"LANG": "C", "CUDA_VISIBLE_DEVICES": "0,1"}, None)
    {'LANG': 'C', 'CUDA_VISIBLE_DEVICES': ''}
    """
    env = {k: v for k, v in client_env.items() if not gateway_owned(k)}
    if lease is None:
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        env.update(lease_environment(lease))
    return env


def _indices(gpus: Iterable[int]) -> str:
    return ",".join(str(g) for g in gpus)


def _shortage(host: str, n: int, usable: list[int], available: list[int], taken: set[int]) -> str:
    if not usable:
        return f"{host} has no usable GPUs right now; {n} requested"
    leased = len(set(usable) & taken)
    free = f"{len(available)} of {len(usable)} usable GPU(s) on {host} free"
    return f"{n} GPU(s) requested, only {free} ({leased} leased to other sessions)"
