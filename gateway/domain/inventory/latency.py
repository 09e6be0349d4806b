"""Latency statistics over probe samples: median, p95 and a sparkline history.

Pure (no I/O, no clock): the probe adapter records samples with its own
clock and asks for a summary. Percentiles use the nearest-rank method (the
smallest sample with at least q% of samples at or below it), so every value
shown is one that was actually measured, and p95 of fewer than 20 samples
is simply the largest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

HostState = Literal["unknown", "up", "down"]


@dataclass(frozen=True, slots=True)
class ProbeSample:
    """One probe round: when (probe clock, seconds) and the SSH round trip, or why none."""

    at: float
    rtt_ms: float | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.rtt_ms is not None


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Summary of the recent successful samples (None when there are none)."""

    last_ms: float | None
    median_ms: float | None
    p95_ms: float | None
    samples: int  # successful samples the median and p95 were taken over


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0 < q <= 100) of ``values``; None when empty.

    >>> percentile([5.0, 1.0, 3.0], 50)
    3.0
    """
    if not values:
        return None
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is not in (0, 100]")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float | None:
    """The middle value (mean of the two middle ones for an even count); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def summarize(samples: Sequence[ProbeSample], window: int) -> LatencyStats:
    """Stats over the last ``window`` successful samples; ``last_ms`` is the newest of them."""
    recent = [s.rtt_ms for s in samples if s.rtt_ms is not None][-window:] if window > 0 else []
    return LatencyStats(
        last_ms=recent[-1] if recent else None,
        median_ms=median(recent),
        p95_ms=percentile(recent, 95),
        samples=len(recent),
    )


def sparkline(samples: Sequence[ProbeSample]) -> tuple[float | None, ...]:
    """The RTT history oldest first; None marks a missed probe (a gap, not a zero)."""
    return tuple(s.rtt_ms for s in samples)
