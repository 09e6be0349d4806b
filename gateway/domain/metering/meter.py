"""Session cost: GPU time at the host's price plus egress bytes at its egress price.

    cost = GPUs * price per GPU-hour * elapsed hours  +  egress bytes / 10^9 * price per GB

A GB here is 10^9 bytes (the unit clouds bill egress in), not a GiB.
Egress is what leaves the host's region: for a session, the bytes the host
sends towards the user (``bytes_down`` in session records).

Pure: ``SessionMeter`` reads time only through the clock it is given, and
totals take finished numbers. Amounts are floats in the catalogue currency;
they are rounded only for display.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal

from gateway.domain.inventory.catalog import PriceCatalog
from gateway.domain.metering.budgets import Spend
from gateway.domain.models import Host

BYTES_PER_GB = 1_000_000_000
SECONDS_PER_HOUR = 3600.0

TotalBy = Literal["user", "team", "host", "day"]


@dataclass(frozen=True, slots=True)
class Rate:
    """What one host charges."""

    per_gpu_hour: float
    egress_per_gb: float = 0.0
    currency: str = "USD"


@dataclass(frozen=True, slots=True)
class Cost:
    """A session's cost so far, split into GPU time and egress."""

    gpu: float
    egress: float
    currency: str = "USD"

    @property
    def total(self) -> float:
        return self.gpu + self.egress


def gpu_cost(gpus: int, per_gpu_hour: float, elapsed_s: float) -> float:
    """GPUs * price per GPU-hour * hours.

    >>> gpu_cost(2, 3.0, 1800)
    3.0
    """
    return gpus * per_gpu_hour * max(0.0, elapsed_s) / SECONDS_PER_HOUR


def egress_cost(nbytes: int, per_gb: float) -> float:
    """Bytes / 10^9 * price per GB.

    >>> egress_cost(2_500_000_000, 0.08)
    0.2
    """
    return max(0, nbytes) * per_gb / BYTES_PER_GB


def session_cost(rate: Rate, gpus: int, elapsed_s: float, egress_bytes: int = 0) -> Cost:
    """The cost of ``gpus`` held for ``elapsed_s`` seconds with ``egress_bytes`` sent out."""
    return Cost(
        gpu_cost(gpus, rate.per_gpu_hour, elapsed_s),
        egress_cost(egress_bytes, rate.egress_per_gb),
        rate.currency,
    )


def rate_for(
    host: Host, catalog: PriceCatalog | None = None, spot: bool = False, currency: str = "USD"
) -> Rate:
    """The host's rate: its catalogue row if there is one, else the inventory's prices.

    ``spot`` picks the spot price; where a row offers none the session is
    billed on demand, as it would run. The inventory carries no currency, so
    ``currency`` names it.
    """
    row = catalog.for_host(host) if catalog is not None else None
    if row is None:
        return Rate(host.price_per_gpu_hour, host.egress_per_gb, currency)
    per_hour = row.per_gpu_hour(spot)
    if per_hour is None:
        per_hour = row.on_demand_per_gpu_hour
    return Rate(per_hour, row.egress_per_gb, row.currency)


class SessionMeter:
    """The running cost of one session; GPUs may be leased and released along the way.

    ``clock`` is a monotonic clock in seconds (``time.monotonic`` in the
    gateway, a counter in tests).
    """

    def __init__(self, rate: Rate, clock: Callable[[], float], gpus: int = 0) -> None:
        self.rate = rate
        self._clock = clock
        self._started = self._mark = clock()
        self._gpus = gpus
        self._gpu_seconds = 0.0
        self._egress = 0
        self._ended: float | None = None

    @property
    def gpus(self) -> int:
        return self._gpus

    @property
    def egress_bytes(self) -> int:
        return self._egress

    @property
    def ended(self) -> bool:
        return self._ended is not None

    def elapsed_s(self) -> float:
        end = self._ended if self._ended is not None else self._clock()
        return end - self._started

    def gpu_seconds(self) -> float:
        """GPU-seconds so far (GPUs * seconds, summed over changes in the GPU count)."""
        if self._ended is not None:
            return self._gpu_seconds
        return self._gpu_seconds + self._gpus * (self._clock() - self._mark)

    def set_gpus(self, gpus: int) -> None:
        """The session now holds ``gpus`` GPUs (after a lease or a release)."""
        if self._ended is None:
            now = self._clock()
            self._gpu_seconds += self._gpus * (now - self._mark)
            self._mark, self._gpus = now, gpus

    def add_egress(self, nbytes: int) -> None:
        """Count bytes the host sent out of its region."""
        if self._ended is None and nbytes > 0:
            self._egress += nbytes

    def cost(self) -> Cost:
        """Cost so far (final once ``stop`` was called)."""
        return Cost(
            self.rate.per_gpu_hour * self.gpu_seconds() / SECONDS_PER_HOUR,
            egress_cost(self._egress, self.rate.egress_per_gb),
            self.rate.currency,
        )

    def stop(self) -> Cost:
        """End the session: time stops counting; returns the final cost. Idempotent."""
        if self._ended is None:
            self.set_gpus(self._gpus)
            self._ended = self._mark
        return self.cost()


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One session's usage, for totals. Times are Unix seconds; a live session
    is passed with ``ended_at`` = now and its running cost."""

    session_id: str
    user: str
    host: str
    started_at: float
    ended_at: float
    cost: Cost
    team: str = ""
    gpu_hours: float = 0.0
    egress_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Total:
    """Usage summed over one key (a user, team, host or ISO day) in one currency."""

    key: str
    currency: str
    sessions: int
    gpu_hours: float
    egress_bytes: float
    gpu_cost: float
    egress_cost: float

    @property
    def cost(self) -> float:
        return self.gpu_cost + self.egress_cost


def totals(records: Iterable[UsageRecord], by: TotalBy, tz: tzinfo = UTC) -> tuple[Total, ...]:
    """Usage summed per user, team, host or day, sorted by key then currency.

    For ``day`` a session that spans midnight (in ``tz``) is split between
    the days in proportion to the time it ran in each, GPU cost and egress
    alike (the bytes' own timing is not recorded), and counts as a session
    on each day it touched. Records without a team total under ``""``.
    """
    sums: dict[tuple[str, str], list[float]] = {}
    for record in records:
        parts = _day_shares(record, tz) if by == "day" else [(_key(record, by), 1.0)]
        for key, share in parts:
            acc = sums.setdefault((key, record.cost.currency), [0.0] * 5)
            acc[0] += 1
            acc[1] += record.gpu_hours * share
            acc[2] += record.egress_bytes * share
            acc[3] += record.cost.gpu * share
            acc[4] += record.cost.egress * share
    return tuple(
        Total(key, currency, int(acc[0]), acc[1], acc[2], acc[3], acc[4])
        for (key, currency), acc in sorted(sums.items())
    )


def spend(
    records: Iterable[UsageRecord],
    today: date,
    *,
    user: str | None = None,
    team: str | None = None,
    tz: tzinfo = UTC,
) -> Spend:
    """What a user (or a team) has spent on ``today`` and in its month, for budget checks.

    Sessions are split across days as in ``totals``; amounts are summed
    whatever their currency, so keep one currency per gateway.
    """
    today_key, month_key = today.isoformat(), today.isoformat()[:7]
    day_total = month_total = 0.0
    for record in records:
        if (user is not None and record.user != user) or (team is not None and record.team != team):
            continue
        for key, share in _day_shares(record, tz):
            amount = record.cost.total * share
            if key == today_key:
                day_total += amount
            if key[:7] == month_key:
                month_total += amount
    return Spend(day_total, month_total)


def _key(record: UsageRecord, by: TotalBy) -> str:
    if by == "user":
        return record.user
    if by == "team":
        return record.team
    return record.host


def _day_shares(record: UsageRecord, tz: tzinfo) -> list[tuple[str, float]]:
    """(ISO day, fraction of the session's time on that day) for each day it touched."""
    start, end = record.started_at, max(record.ended_at, record.started_at)
    duration = end - start
    if duration <= 0:
        return [(datetime.fromtimestamp(start, tz).date().isoformat(), 1.0)]
    shares: list[tuple[str, float]] = []
    cursor = start
    while cursor < end:
        day = datetime.fromtimestamp(cursor, tz).date()
        # Unix seconds, not aware-datetime arithmetic, which ignores DST within one zone.
        midnight = datetime.combine(day + timedelta(days=1), time(), tz).timestamp()
        stop = min(midnight if midnight > cursor else cursor + 86400.0, end)
        shares.append((day.isoformat(), (stop - cursor) / duration))
        cursor = stop
    return shares
