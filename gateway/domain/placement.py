"""Placement: which hosts can take a job, in what order, and why the others cannot.

``rank_hosts`` takes a snapshot of every host (inventory plus live state:
up/down, RTT, free GPUs, price, measured throughput, and the policy's verdict
for this user) and the job's constraints. Every host ends up in exactly one
of two lists: ``ranked`` (qualifies, best first) or ``excluded`` (with every
reason it fails, in a fixed order). Same input, same output: no clock, no
I/O, ties broken by host name. docs/placement.md explains the score.

Score (lower is better), over the qualifying hosts only::

    score = (w_cost * cost / max_cost + w_latency * latency / max_latency
             + w_sync * sync / max_sync) / (w_cost + w_latency + w_sync)

    cost     = GPUs * price per GPU-hour * hours + egress bytes / 10^9 * price per GB
    latency  = client<->gateway RTT + gateway<->host RTT (median of recent probes), ms
    sync     = workdir bytes / throughput + files * per_file_rtts * latency, seconds

Each term is divided by the largest value among the qualifying hosts (a term
that is zero everywhere counts zero), so the score is in [0, 1], weights mean
what they say whatever the units, and a host twice as dear as another scores
twice as badly on cost, not "worst" as min-max scaling would make it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from gateway.domain.inventory.gpus import gpu_model_matches
from gateway.domain.metering.meter import SECONDS_PER_HOUR, egress_cost, gpu_cost
from gateway.domain.models import Host
from gateway.domain.policy.residency import DataSet, check_residency

SyncBasis = Literal["measured", "window", "none"]


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    """One host as placement sees it; None prices fall back to the inventory's."""

    host: Host
    up: bool
    rtt_ms: float | None  # gateway <-> host, median of recent probes
    free_gpus: int  # usable GPUs nobody holds a lease on
    gpu_model: str = ""  # as nvidia-smi reports it; "" = the inventory's
    price_per_gpu_hour: float | None = None
    egress_per_gb: float | None = None
    currency: str = "USD"
    throughput_bps: float | None = None  # measured bytes/s towards the host
    denied: str = ""  # policy's reason when this user may not use the host

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def model(self) -> str:
        return self.gpu_model or self.host.gpu_model

    @property
    def price(self) -> float:
        p = self.price_per_gpu_hour
        return self.host.price_per_gpu_hour if p is None else p

    @property
    def egress_price(self) -> float:
        p = self.egress_per_gb
        return self.host.egress_per_gb if p is None else p


@dataclass(frozen=True, slots=True)
class Constraints:
    """What the job needs (``gpuhop pick`` flags) and what it will move."""

    gpus: int = 1
    gpu_model: str = ""  # "" = any; else matched by gpu_model_matches ("H100")
    max_latency_ms: float | None = None  # end to end: client_rtt_ms + host RTT
    max_price: float | None = None  # per GPU-hour, in the hosts' currency
    dataset: DataSet | None = None
    workdir_bytes: int = 0
    workdir_files: int = 0
    hours: float = 1.0  # expected run time, for the expected cost
    egress_bytes: int = 0  # expected results brought back out of the region
    client_rtt_ms: float = 0.0  # the client's own round trip to the gateway

    def __post_init__(self) -> None:
        for name in ("gpus", "workdir_bytes", "workdir_files", "egress_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} cannot be negative")
        for name in ("hours", "client_rtt_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number")


@dataclass(frozen=True, slots=True)
class Weights:
    """Relative weight of each score term; only their ratios matter."""

    cost: float = 1.0
    latency: float = 1.0
    sync: float = 1.0

    def __post_init__(self) -> None:
        values = (self.cost, self.latency, self.sync)
        if any(not (math.isfinite(v) and v >= 0) for v in values) or sum(values) <= 0:
            raise ValueError("weights must be non-negative numbers, not all zero")


@dataclass(frozen=True, slots=True)
class SyncModel:
    """How the time to send a work directory is estimated (see docs/placement.md)."""

    per_file_rtts: float = 0.1  # round trips each file costs beyond its bytes
    window_bytes: int = 8 * 1024 * 1024  # SSH channel window: at most this per RTT
    assumed_link_bps: float = 125_000_000.0  # 1 Gbit/s, when nothing was measured


@dataclass(frozen=True, slots=True)
class SyncEstimate:
    """Time to send the work directory to one host, and the throughput it assumed."""

    seconds: float
    throughput_bps: float
    basis: SyncBasis  # measured throughput, window/RTT bound, or nothing to send


@dataclass(frozen=True, slots=True)
class Terms:
    """Each term's share of the score before weighting, in [0, 1]."""

    cost: float
    latency: float
    sync: float


@dataclass(frozen=True, slots=True)
class RankedHost:
    """A host that qualifies; ``rank`` 1 is the best."""

    rank: int
    name: str
    region: str
    score: float
    terms: Terms
    expected_cost: float
    currency: str
    price_per_gpu_hour: float
    latency_ms: float  # end to end
    host_rtt_ms: float
    free_gpus: int
    gpu_model: str
    sync: SyncEstimate


@dataclass(frozen=True, slots=True)
class ExcludedHost:
    """A host that does not qualify, with every reason in a fixed order."""

    name: str
    region: str
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


@dataclass(frozen=True, slots=True)
class Placement:
    """The answer to ``gpuhop pick``: every host is in exactly one of the two lists."""

    ranked: tuple[RankedHost, ...] = ()
    excluded: tuple[ExcludedHost, ...] = ()
    weights: Weights = field(default_factory=Weights)

    @property
    def best(self) -> RankedHost | None:
        return self.ranked[0] if self.ranked else None


def estimate_sync(
    nbytes: int,
    files: int,
    rtt_ms: float,
    throughput_bps: float | None = None,
    model: SyncModel | None = None,
) -> SyncEstimate:
    """Seconds to send ``nbytes`` in ``files`` files to a host ``rtt_ms`` away.

    ``bytes / throughput + files * per_file_rtts * RTT``. Without a measured
    throughput, the SSH window bounds it: at most one window per round trip,
    and at most ``assumed_link_bps``.

    >>> estimate_sync(100_000_000, 1000, 40.0, throughput_bps=50_000_000).seconds
    6.0
    """
    m = model or SyncModel()
    rtt_s = max(0.0, rtt_ms) / 1000
    measured = throughput_bps is not None and throughput_bps > 0
    if throughput_bps is not None and throughput_bps > 0:
        rate = throughput_bps
    else:
        rate = min(m.window_bytes / rtt_s if rtt_s > 0 else math.inf, m.assumed_link_bps)
    if nbytes <= 0 and files <= 0:
        return SyncEstimate(0.0, rate, "none")
    seconds = max(0, nbytes) / rate + max(0, files) * m.per_file_rtts * rtt_s
    return SyncEstimate(seconds, rate, "measured" if measured else "window")


def exclusion_reasons(snap: HostSnapshot, want: Constraints) -> tuple[str, ...]:
    """Every reason ``snap`` cannot take the job, in a fixed order; () if it can."""
    host, reasons = snap.host, []
    if snap.denied:
        reasons.append(snap.denied)
    if not snap.up:
        reasons.append("host is down")
    elif snap.rtt_ms is None:
        reasons.append("no round-trip time measured yet")
    if want.dataset is not None:
        decision = check_residency(want.dataset, host)
        if not decision.allowed:
            reasons.append(decision.reason)
    if want.gpu_model and not gpu_model_matches(want.gpu_model, snap.model):
        has = snap.model or "no GPU model declared"
        reasons.append(f"GPU model is {has}, not {want.gpu_model}")
    if want.gpus > host.gpu_count:
        reasons.append(f"has {host.gpu_count} GPU(s), {want.gpus} requested")
    elif want.gpus > snap.free_gpus:
        reasons.append(
            f"only {max(0, snap.free_gpus)} of {host.gpu_count} GPU(s) free, {want.gpus} requested"
        )
    if want.max_latency_ms is not None and snap.up and snap.rtt_ms is not None:
        latency = want.client_rtt_ms + snap.rtt_ms
        if latency > want.max_latency_ms:
            reasons.append(f"latency {latency:.1f} ms exceeds {want.max_latency_ms:g} ms")
    if want.max_price is not None and snap.price > want.max_price:
        reasons.append(
            f"{snap.price:.2f} {snap.currency} per GPU-hour exceeds {want.max_price:.2f}"
        )
    return tuple(reasons)


def rank_hosts(
    hosts: Iterable[HostSnapshot],
    want: Constraints,
    weights: Weights | None = None,
    sync_model: SyncModel | None = None,
) -> Placement:
    """Rank the hosts that qualify for ``want`` and list every other with its reasons."""
    w = weights or Weights()
    snaps = sorted(hosts, key=lambda s: s.name)
    names = [s.name for s in snaps]
    if len(set(names)) != len(names):
        raise ValueError("each host may appear only once")
    excluded: list[ExcludedHost] = []
    fit: list[tuple[HostSnapshot, float, float, float, SyncEstimate]] = []
    for snap in snaps:
        reasons, rtt = exclusion_reasons(snap, want), snap.rtt_ms
        if reasons or rtt is None:
            excluded.append(ExcludedHost(snap.name, snap.host.region, reasons))
            continue
        cost = gpu_cost(want.gpus, snap.price, want.hours * SECONDS_PER_HOUR) + egress_cost(
            want.egress_bytes, snap.egress_price
        )
        latency = want.client_rtt_ms + rtt
        sync = estimate_sync(
            want.workdir_bytes, want.workdir_files, latency, snap.throughput_bps, sync_model
        )
        fit.append((snap, rtt, cost, latency, sync))
    top_cost = max((f[2] for f in fit), default=0.0)
    top_latency = max((f[3] for f in fit), default=0.0)
    top_sync = max((f[4].seconds for f in fit), default=0.0)
    total_weight = w.cost + w.latency + w.sync
    scored: list[tuple[float, str, RankedHost]] = []
    for snap, rtt, cost, latency, sync in fit:
        terms = Terms(
            _share(cost, top_cost), _share(latency, top_latency), _share(sync.seconds, top_sync)
        )
        score = (w.cost * terms.cost + w.latency * terms.latency + w.sync * terms.sync) / (
            total_weight
        )
        ranked = RankedHost(
            rank=0,
            name=snap.name,
            region=snap.host.region,
            score=score,
            terms=terms,
            expected_cost=cost,
            currency=snap.currency,
            price_per_gpu_hour=snap.price,
            latency_ms=latency,
            host_rtt_ms=rtt,
            free_gpus=snap.free_gpus,
            gpu_model=snap.model,
            sync=sync,
        )
        # Rounded so float noise between equal scores cannot beat the name order.
        scored.append((round(score, 9), snap.name, ranked))
    scored.sort(key=lambda item: (item[0], item[1]))
    ordered = tuple(replace(r, rank=i) for i, (_, _, r) in enumerate(scored, 1))
    return Placement(ordered, tuple(excluded), w)


def _share(value: float, top: float) -> float:
    return value / top if top > 0 else 0.0
