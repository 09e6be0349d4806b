"""Metering maths: cost = GPUs x rate x hours + egress bytes / 1e9 x price per GB."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.domain.inventory.catalog import parse_catalog
from gateway.domain.metering.budgets import Spend
from gateway.domain.metering.meter import (
    BYTES_PER_GB,
    Cost,
    Rate,
    SessionMeter,
    Total,
    UsageRecord,
    egress_cost,
    gpu_cost,
    rate_for,
    session_cost,
    spend,
    totals,
)
from gateway.domain.models import Host


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("gpus", "rate", "seconds", "expected"),
    [
        (1, 2.0, 3600, 2.0),
        (4, 2.5, 1800, 5.0),
        (8, 3.69, 90, 8 * 3.69 * 90 / 3600),
        (0, 2.0, 3600, 0.0),
        (2, 0.0, 3600, 0.0),
        (2, 2.0, -5, 0.0),  # a clock step backwards never makes a credit
    ],
)
def test_gpu_cost(gpus: int, rate: float, seconds: float, expected: float) -> None:
    assert gpu_cost(gpus, rate, seconds) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("nbytes", "per_gb", "expected"),
    [
        (BYTES_PER_GB, 0.09, 0.09),
        (2**30, 1.0, 1.073741824),  # a GiB is 1.0737 GB: prices are per 10^9 bytes
        (0, 0.09, 0.0),
        (-10, 0.09, 0.0),
    ],
)
def test_egress_cost(nbytes: int, per_gb: float, expected: float) -> None:
    assert egress_cost(nbytes, per_gb) == pytest.approx(expected, rel=1e-12)


def test_known_rate_and_duration_give_the_exact_cost() -> None:
    rate = Rate(per_gpu_hour=2.49, egress_per_gb=0.08)
    clock = Clock()
    meter = SessionMeter(rate, clock, gpus=2)
    clock.now += 754.3  # a measured hold time
    meter.add_egress(3_250_000_000)
    final = meter.stop()
    expected = 2 * 2.49 * 754.3 / 3600 + 3.25 * 0.08
    assert final.total == pytest.approx(expected, rel=1e-9)  # the brief allows 1 %
    assert abs(final.total - expected) / expected < 0.01
    assert final == session_cost(rate, 2, 754.3, 3_250_000_000)


def test_running_cost_grows_and_final_cost_is_frozen() -> None:
    clock = Clock()
    meter = SessionMeter(Rate(3.6), clock, gpus=1)
    assert meter.cost().total == 0.0
    clock.now += 100
    assert meter.cost().gpu == pytest.approx(0.1)
    assert meter.elapsed_s() == 100
    final = meter.stop()
    clock.now += 5000
    meter.set_gpus(8)
    meter.add_egress(10**12)
    assert meter.stop() == final and meter.cost() == final and meter.ended
    assert meter.elapsed_s() == 100 and meter.egress_bytes == 0


def test_gpu_count_changes_are_integrated_piecewise() -> None:
    clock = Clock()
    meter = SessionMeter(Rate(1.0), clock)  # a shell with no GPUs yet
    clock.now += 600
    meter.set_gpus(4)  # lease 4
    clock.now += 1800
    meter.set_gpus(1)  # release 3
    clock.now += 3600
    assert meter.gpu_seconds() == 4 * 1800 + 3600
    assert meter.stop().gpu == pytest.approx((4 * 0.5 + 1 * 1.0) * 1.0)
    assert meter.gpus == 1


HOST = Host(
    "sg-1",
    "sg",
    "10.0.0.1",
    gpu_model="NVIDIA H100 80GB HBM3",
    gpu_count=8,
    price_per_gpu_hour=9.0,
    egress_per_gb=0.5,
)
CATALOG = parse_catalog(
    "region,host,gpu_model,on_demand_per_gpu_hour,spot_per_gpu_hour,egress_per_gb,currency\n"
    "sg,,H100,2.79,1.40,0.09,SGD\n"
    "my,,H100,2.49,,0.08,USD\n"
)


@pytest.mark.parametrize(
    ("host", "spot", "expected"),
    [
        (HOST, False, Rate(2.79, 0.09, "SGD")),
        (HOST, True, Rate(1.40, 0.09, "SGD")),
        (Host("my-1", "my", "10.0.0.2", gpu_model="H100"), True, Rate(2.49, 0.08, "USD")),
        (Host("ae-1", "ae", "10.0.0.3", price_per_gpu_hour=3.0), False, Rate(3.0, 0.0, "USD")),
    ],
)
def test_rate_for(host: Host, spot: bool, expected: Rate) -> None:
    assert rate_for(host, CATALOG, spot=spot) == expected


def test_rate_for_without_a_catalogue_uses_the_inventory() -> None:
    assert rate_for(HOST) == Rate(9.0, 0.5, "USD")
    assert rate_for(HOST, currency="EUR").currency == "EUR"


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def usage(
    sid: str, user: str, team: str, host: str, start: str, end: str, gpu: float, egress: float
) -> UsageRecord:
    return UsageRecord(
        sid,
        user,
        host,
        ts(start),
        ts(end),
        Cost(gpu, egress),
        team,
        gpu_hours=gpu,
        egress_bytes=int(egress * BYTES_PER_GB),
    )


RECORDS = (
    usage("a", "alice", "ml", "sg-1", "2024-05-01T10:00", "2024-05-01T12:00", 4.0, 1.0),
    usage("b", "bob", "ml", "my-1", "2024-05-01T23:00", "2024-05-02T01:00", 2.0, 2.0),
    usage("c", "alice", "ml", "my-1", "2024-05-31T12:00", "2024-06-01T12:00", 10.0, 0.0),
    usage("d", "carol", "", "sg-1", "2024-06-01T08:00", "2024-06-01T08:00", 0.0, 0.5),
)


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        (
            "user",
            [("alice", 2, 14.0, 1.0), ("bob", 1, 2.0, 2.0), ("carol", 1, 0.0, 0.5)],
        ),
        ("team", [("", 1, 0.0, 0.5), ("ml", 3, 16.0, 3.0)]),
        ("host", [("my-1", 2, 12.0, 2.0), ("sg-1", 2, 4.0, 1.5)]),
        (
            "day",
            [
                ("2024-05-01", 2, 5.0, 2.0),
                ("2024-05-02", 1, 1.0, 1.0),
                ("2024-05-31", 1, 5.0, 0.0),
                ("2024-06-01", 2, 5.0, 0.5),
            ],
        ),
    ],
)
def test_totals(by: str, expected: list[tuple[str, int, float, float]]) -> None:
    got = totals(RECORDS, by)  # type: ignore[arg-type]
    assert [(t.key, t.sessions) for t in got] == [(k, n) for k, n, _, _ in expected]
    assert [t.gpu_cost for t in got] == pytest.approx([g for _, _, g, _ in expected])
    assert [t.egress_cost for t in got] == pytest.approx([e for _, _, _, e in expected])
    assert sum(t.cost for t in got) == pytest.approx(sum(r.cost.total for r in RECORDS))


def test_day_totals_follow_the_time_zone() -> None:
    # 23:00-01:00 UTC is 07:00-09:00 in Singapore: one day there.
    got = totals(RECORDS[1:2], "day", tz=ZoneInfo("Asia/Singapore"))
    assert [(t.key, t.cost) for t in got] == [("2024-05-02", 4.0)]


def test_day_split_across_a_dst_change() -> None:
    # 2024-03-31 in Berlin has 23 hours; a session over all of it and one hour of the next.
    start = datetime(2024, 3, 31, 0, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    record = UsageRecord("x", "u", "h", start, start + 24 * 3600, Cost(24.0, 0.0))
    got = totals([record], "day", tz=ZoneInfo("Europe/Berlin"))
    assert [t.key for t in got] == ["2024-03-31", "2024-04-01"]
    assert [t.gpu_cost for t in got] == pytest.approx([23.0, 1.0])


def test_currencies_are_never_added_together() -> None:
    records = [
        UsageRecord("a", "u", "h", 0, 10, Cost(1.0, 0.0, "USD")),
        UsageRecord("b", "u", "h", 0, 10, Cost(2.0, 0.0, "SGD")),
    ]
    assert totals(records, "user") == (
        Total("u", "SGD", 1, 0.0, 0.0, 2.0, 0.0),
        Total("u", "USD", 1, 0.0, 0.0, 1.0, 0.0),
    )


@pytest.mark.parametrize(
    ("who", "day", "expected"),
    [
        ({"user": "alice"}, date(2024, 5, 1), Spend(5.0, 10.0)),
        ({"user": "alice"}, date(2024, 5, 31), Spend(5.0, 10.0)),
        ({"user": "alice"}, date(2024, 6, 1), Spend(5.0, 5.0)),
        ({"user": "bob"}, date(2024, 5, 2), Spend(2.0, 4.0)),
        ({"team": "ml"}, date(2024, 5, 1), Spend(7.0, 14.0)),
        ({"team": "ml"}, date(2024, 7, 1), Spend(0.0, 0.0)),
        ({}, date(2024, 6, 1), Spend(5.5, 5.5)),
    ],
)
def test_spend(who: dict[str, str], day: date, expected: Spend) -> None:
    got = spend(RECORDS, day, user=who.get("user"), team=who.get("team"))
    assert (got.today, got.month) == pytest.approx((expected.today, expected.month))
