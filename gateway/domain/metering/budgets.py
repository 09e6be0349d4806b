"""Budgets: daily and monthly spending limits per user or team.

A new session is refused once what was spent reaches a limit (running
sessions are not cut off here; that is the session broker's call), and
allowed with a warning from ``WARN_AT`` (80 %) of a limit. When a user and
their team both have limits, ``check_all`` applies both: a refusal from
either refuses, otherwise any warning is passed on.

Pure: the caller supplies what was spent (``metering.meter.spend``); no
clock, no storage.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

WARN_AT = 0.8


@dataclass(frozen=True, slots=True)
class Spend:
    """Spent so far on the current day and in the current month."""

    today: float
    month: float


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """Limits for one user or team; None = no limit on that period."""

    daily: float | None = None
    monthly: float | None = None
    currency: str = "USD"

    def __post_init__(self) -> None:
        for name, value in (("daily", self.daily), ("monthly", self.monthly)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} budget must be a non-negative amount, got {value}")


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """Whether a new session may start; ``reason`` is shown to the user and audited."""

    allowed: bool
    warning: bool
    reason: str

    @property
    def notice(self) -> str:
        """The line a session shows for a warning, with "warning" said once.

        >>> check(45.0, 45.0, BudgetLimits(daily=50.0), "user alice").notice
        'warning: user alice: 45.00 USD of the 50.00 USD daily budget spent (90%)'
        """
        return "warning: " + self.reason.replace(": warning: ", ": ")


def check(
    spent_today: float,
    spent_month: float,
    limits: BudgetLimits,
    who: str = "",
    warn_at: float = WARN_AT,
) -> BudgetDecision:
    """Decide against one set of limits; ``who`` ("user alice", "team ml") starts the reason.

    >>> check(45.0, 45.0, BudgetLimits(daily=50.0)).warning
    True
    """
    subject = who or "budget"
    periods = (
        ("monthly", "month", spent_month, limits.monthly),
        ("daily", "day", spent_today, limits.daily),
    )
    for name, period, spent, limit in periods:  # the month first: it blocks longer
        if limit is not None and spent >= limit:
            return BudgetDecision(
                False,
                False,
                f"{subject}: {_money(spent, limits.currency, limit)} spent of the "
                f"{_money(limit, limits.currency, spent)} {name} budget; new sessions are refused "
                f"until the {period} ends",
            )
    warnings = [
        f"{_money(spent, limits.currency, limit)} of the {_money(limit, limits.currency, spent)} "
        f"{name} budget spent ({math.floor(spent / limit * 100)}%)"
        for name, _, spent, limit in reversed(periods)
        if limit is not None and spent >= warn_at * limit
    ]
    if warnings:
        return BudgetDecision(True, True, f"{subject}: warning: " + "; ".join(warnings))
    shown = [
        f"{spent:.2f} of {_money(limit, limits.currency)} {name}"
        for name, _, spent, limit in reversed(periods)
        if limit is not None
    ]
    if not shown:
        return BudgetDecision(True, False, f"{subject}: no budget limit")
    return BudgetDecision(True, False, f"{subject}: within budget ({', '.join(shown)})")


def check_all(decisions: Iterable[BudgetDecision]) -> BudgetDecision:
    """Combine the user's and the team's decisions: any refusal refuses, warnings add up."""
    decided = list(decisions)
    refused = [d for d in decided if not d.allowed]
    if refused:
        return refused[0]
    warned = [d for d in decided if d.warning]
    if warned:
        return BudgetDecision(True, True, "; ".join(d.reason for d in warned))
    if not decided:
        return BudgetDecision(True, False, "no budget limit")
    return BudgetDecision(True, False, "; ".join(d.reason for d in decided))


MAX_DECIMALS = 6


def _money(amount: float, currency: str, beside: float | None = None) -> str:
    """Two decimals, or as many more (up to six) as it takes to tell ``amount`` from the
    different ``beside`` it is shown with: never "0.06 USD of the 0.06 USD ... (92%)".

    >>> _money(0.0552, "USD", 0.06), _money(0.06, "USD", 0.0552)
    ('0.055 USD', '0.060 USD')
    """
    decimals = 2
    while (
        beside is not None
        and amount != beside
        and decimals < MAX_DECIMALS
        and round(amount, decimals) == round(beside, decimals)
    ):
        decimals += 1
    return f"{amount:.{decimals}f} {currency}"
