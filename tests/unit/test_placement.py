"""Placement: qualifying hosts ranked by a documented score, every other host with its reasons."""

from __future__ import annotations

import itertools
import math
import random
import subprocess
import sys

import pytest

from gateway.domain.models import Host
from gateway.domain.placement import (
    Constraints,
    ExcludedHost,
    HostSnapshot,
    SyncEstimate,
    SyncModel,
    Weights,
    estimate_sync,
    exclusion_reasons,
    rank_hosts,
)
from gateway.domain.policy.residency import DataSet

H100 = "NVIDIA H100 80GB HBM3"


def host(name: str, model: str = H100, gpus: int = 8, price: float = 2.0) -> Host:
    region = name.split("-")[0]
    return Host(
        name,
        region,
        "10.0.0.1",
        gpu_model=model,
        gpu_count=gpus,
        price_per_gpu_hour=price,
        egress_per_gb=0.1,
        residency=(region.upper(),),
    )


def snap(h: Host, rtt: float | None = 10.0, free: int | None = None, **kw: object) -> HostSnapshot:
    return HostSnapshot(h, True, rtt, h.gpu_count if free is None else free, **kw)  # type: ignore[arg-type]


# A fixed fleet: three that usually qualify and one of each way to be excluded.
SG1 = snap(host("sg-1", price=2.79), rtt=5.0)
MY1 = snap(host("my-1", price=2.49), rtt=40.0)
AE1 = snap(host("ae-1", "NVIDIA H200", price=3.69), rtt=120.0)
SG2 = HostSnapshot(host("sg-2"), False, None, 8)
MY2 = snap(host("my-2"), denied="role dev does not grant host my-2")
AE2 = snap(host("ae-2"), free=0)
SG3 = snap(host("sg-3"), rtt=None)
FLEET = (SG1, MY1, AE1, SG2, MY2, AE2, SG3)


def test_every_host_is_ranked_or_excluded_with_reasons() -> None:
    placement = rank_hosts(FLEET, Constraints(gpus=2))
    assert [r.name for r in placement.ranked] == ["sg-1", "my-1", "ae-1"]
    assert [r.rank for r in placement.ranked] == [1, 2, 3]
    assert placement.excluded == (
        ExcludedHost("ae-2", "ae", ("only 0 of 8 GPU(s) free, 2 requested",)),
        ExcludedHost("my-2", "my", ("role dev does not grant host my-2",)),
        ExcludedHost("sg-2", "sg", ("host is down",)),
        ExcludedHost("sg-3", "sg", ("no round-trip time measured yet",)),
    )
    names = [r.name for r in placement.ranked] + [e.name for e in placement.excluded]
    assert sorted(names) == sorted(s.name for s in FLEET)
    assert placement.best is placement.ranked[0]


def test_output_is_the_same_for_any_input_order() -> None:
    want = Constraints(gpus=2, workdir_bytes=10**9, workdir_files=5000, max_latency_ms=100)
    first = rank_hosts(FLEET, want)
    orders = list(itertools.islice(itertools.permutations(FLEET), 50))
    orders += [tuple(random.Random(seed).sample(FLEET, len(FLEET))) for seed in range(20)]
    for order in orders:
        assert rank_hosts(order, want) == first


def test_score_terms_are_shares_of_the_largest_value() -> None:
    a = snap(host("a-1", price=2.0), rtt=10.0)
    b = snap(host("b-1", price=4.0), rtt=5.0)
    placement = rank_hosts([b, a], Constraints(gpus=1, hours=1.0))
    first, second = placement.ranked
    # cost 2 vs 4 -> 0.5, 1; latency 10 vs 5 -> 1, 0.5; both score 0.5: tie broken by name.
    assert (first.name, first.terms.cost, first.terms.latency, first.score) == ("a-1", 0.5, 1, 0.5)
    assert (second.name, second.terms.cost, second.terms.latency, second.score) == (
        "b-1",
        1,
        0.5,
        0.5,
    )
    assert (first.expected_cost, first.latency_ms, first.sync.seconds) == (2.0, 10.0, 0.0)


@pytest.mark.parametrize(
    ("weights", "order"),
    [
        (Weights(), ["a-1", "b-1"]),
        (Weights(cost=2), ["a-1", "b-1"]),
        (Weights(latency=2), ["b-1", "a-1"]),
        (Weights(cost=1, latency=0, sync=0), ["a-1", "b-1"]),
        (Weights(cost=0, latency=1, sync=0), ["b-1", "a-1"]),
    ],
)
def test_weights_are_adjustable(weights: Weights, order: list[str]) -> None:
    a = snap(host("a-1", price=2.0), rtt=10.0)
    b = snap(host("b-1", price=4.0), rtt=5.0)
    placement = rank_hosts([a, b], Constraints(), weights)
    assert [r.name for r in placement.ranked] == order
    assert placement.weights == weights


def test_sync_time_can_outweigh_price() -> None:
    near = snap(host("sg-9", price=3.0), rtt=5.0, throughput_bps=200e6)
    far = snap(host("ae-9", price=2.0), rtt=120.0, throughput_bps=20e6)
    small = rank_hosts([near, far], Constraints(), Weights(cost=1, latency=0, sync=1))
    big = rank_hosts(
        [near, far], Constraints(workdir_bytes=20 * 10**9), Weights(cost=1, latency=0, sync=1)
    )
    assert [r.name for r in small.ranked] == ["ae-9", "sg-9"]
    assert [r.name for r in big.ranked] == ["sg-9", "ae-9"]
    assert big.ranked[1].sync == SyncEstimate(1000.0, 20e6, "measured")


EXPECTED_COST = 2 * 2.0 * 3.0 + 5 * 0.1  # 2 GPUs x 2.0/h x 3 h + 5 GB x 0.1/GB


def test_expected_cost_and_end_to_end_latency() -> None:
    (r,) = rank_hosts(
        [snap(host("sg-1"), rtt=12.0)],
        Constraints(gpus=2, hours=3.0, egress_bytes=5 * 10**9, client_rtt_ms=30.0),
    ).ranked
    assert r.expected_cost == pytest.approx(EXPECTED_COST)
    assert (r.latency_ms, r.host_rtt_ms, r.currency, r.price_per_gpu_hour) == (
        42.0,
        12.0,
        "USD",
        2.0,
    )


SG_DATA = DataSet("scans", countries=("SG",))


@pytest.mark.parametrize(
    ("snapshot", "want", "reasons"),
    [
        (SG1, Constraints(), ()),
        (SG2, Constraints(), ("host is down",)),
        (SG3, Constraints(), ("no round-trip time measured yet",)),
        (MY2, Constraints(), ("role dev does not grant host my-2",)),
        (
            MY1,
            Constraints(dataset=SG_DATA),
            ("data set scans may be processed only in SG; host my-1 in region my (MY) is outside",),
        ),
        (SG1, Constraints(dataset=SG_DATA), ()),
        (SG1, Constraints(gpu_model="H200"), (f"GPU model is {H100}, not H200",)),
        (AE1, Constraints(gpu_model="h200"), ()),
        (
            snap(host("x-1", model="")),
            Constraints(gpu_model="H100"),
            ("GPU model is no GPU model declared, not H100",),
        ),
        (snap(host("x-1", model=""), gpu_model=H100), Constraints(gpu_model="H100"), ()),
        (SG1, Constraints(gpus=9), ("has 8 GPU(s), 9 requested",)),
        (
            snap(host("sg-1"), free=3),
            Constraints(gpus=4),
            ("only 3 of 8 GPU(s) free, 4 requested",),
        ),
        (
            snap(host("sg-1"), free=-1),
            Constraints(gpus=1),
            ("only 0 of 8 GPU(s) free, 1 requested",),
        ),
        (snap(host("sg-1"), free=0), Constraints(gpus=0), ()),  # no GPUs needed
        (MY1, Constraints(max_latency_ms=40.0), ()),
        (MY1, Constraints(max_latency_ms=39.9), ("latency 40.0 ms exceeds 39.9 ms",)),
        (MY1, Constraints(max_latency_ms=50, client_rtt_ms=15), ("latency 55.0 ms exceeds 50 ms",)),
        (SG1, Constraints(max_price=2.79), ()),
        (SG1, Constraints(max_price=2.5), ("2.79 USD per GPU-hour exceeds 2.50",)),
        (snap(host("sg-1"), price_per_gpu_hour=1.0), Constraints(max_price=1.5), ()),  # catalogue
        (
            HostSnapshot(
                host("ae-5", "NVIDIA H200", gpus=4, price=9.0),
                False,
                None,
                0,
                denied="role dev does not grant host ae-5",
            ),
            Constraints(gpus=8, gpu_model="H100", max_latency_ms=10, max_price=5, dataset=SG_DATA),
            (
                "role dev does not grant host ae-5",
                "host is down",
                "data set scans may be processed only in SG; "
                "host ae-5 in region ae (AE) is outside",
                "GPU model is NVIDIA H200, not H100",
                "has 4 GPU(s), 8 requested",
                "9.00 USD per GPU-hour exceeds 5.00",
            ),
        ),  # every reason, in a fixed order
    ],
)
def test_exclusion_reasons(
    snapshot: HostSnapshot, want: Constraints, reasons: tuple[str, ...]
) -> None:
    assert exclusion_reasons(snapshot, want) == reasons
    placement = rank_hosts([snapshot], want)
    assert len(placement.ranked) == (0 if reasons else 1)
    if reasons:
        assert placement.excluded[0].reason == "; ".join(reasons)


def test_nothing_qualifies() -> None:
    placement = rank_hosts(FLEET, Constraints(gpus=64))
    assert placement.ranked == () and placement.best is None
    assert len(placement.excluded) == len(FLEET)


@pytest.mark.parametrize(
    ("nbytes", "files", "rtt", "throughput", "expected"),
    [
        (0, 0, 40.0, None, SyncEstimate(0.0, 125e6, "none")),
        (10**9, 0, 40.0, 100e6, SyncEstimate(10.0, 100e6, "measured")),
        (10**9, 10_000, 40.0, 100e6, SyncEstimate(10.0 + 10_000 * 0.1 * 0.04, 100e6, "measured")),
        (0, 100, 100.0, 50e6, SyncEstimate(1.0, 50e6, "measured")),
        # no measurement: one 8 MiB window per round trip ...
        (8 * 1024 * 1024, 0, 100.0, None, SyncEstimate(0.1, 8 * 1024 * 1024 / 0.1, "window")),
        # ... but never faster than the assumed link
        (125_000_000, 0, 1.0, None, SyncEstimate(1.0, 125e6, "window")),
        (125_000_000, 0, 0.0, None, SyncEstimate(1.0, 125e6, "window")),
        (125_000_000, 0, 1.0, 0.0, SyncEstimate(1.0, 125e6, "window")),  # a zero measurement
    ],
)
def test_estimate_sync(
    nbytes: int, files: int, rtt: float, throughput: float | None, expected: SyncEstimate
) -> None:
    got = estimate_sync(nbytes, files, rtt, throughput)
    assert got.basis == expected.basis
    assert (got.seconds, got.throughput_bps) == pytest.approx(
        (expected.seconds, expected.throughput_bps)
    )


def test_sync_model_is_adjustable() -> None:
    model = SyncModel(per_file_rtts=1.0, window_bytes=1024, assumed_link_bps=1e9)
    got = estimate_sync(10_240, 10, 100.0, None, model)
    assert got == SyncEstimate(pytest.approx(1.0 + 10 * 0.1), 10_240.0, "window")  # type: ignore[arg-type]


def test_sync_uses_end_to_end_latency() -> None:
    (r,) = rank_hosts(
        [snap(host("sg-1"), rtt=10.0, throughput_bps=1e9)],
        Constraints(workdir_files=1000, client_rtt_ms=90.0),
    ).ranked
    assert r.sync.seconds == pytest.approx(1000 * 0.1 * 0.1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Constraints(gpus=-1),
        lambda: Constraints(workdir_bytes=-1),
        lambda: Constraints(hours=math.nan),
        lambda: Constraints(client_rtt_ms=-1),
        lambda: Weights(cost=-1),
        lambda: Weights(cost=0, latency=0, sync=0),
        lambda: Weights(sync=math.inf),
    ],
)
def test_bad_inputs_are_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_a_host_may_appear_only_once() -> None:
    with pytest.raises(ValueError, match="only once"):
        rank_hosts([SG1, SG1], Constraints())


PURE = (
    "gateway.domain.placement",
    "gateway.domain.metering.meter",
    "gateway.domain.metering.budgets",
    "gateway.domain.policy.residency",
    "gateway.domain.inventory.gpus",
    "gateway.domain.inventory.latency",
    "gateway.domain.inventory.catalog",
    "gateway.domain.inventory.leases",
    "gateway.adapters.hosts.hostprobe",  # the probe loop: edge-free, though it has a default clock
)


def test_domain_modules_import_no_edges() -> None:
    code = (
        f"import sys, {', '.join(PURE)}; "
        "bad = {'asyncssh', 'docker', 'textual', 'httpx', 'pydantic', 'sqlalchemy'}; "
        "sys.exit(sorted(bad & set(sys.modules)) or 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
