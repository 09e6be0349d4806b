"""Budgets: refuse new sessions once a limit is spent, warn from 80 %."""

from __future__ import annotations

import math

import pytest

from gateway.domain.metering.budgets import BudgetDecision, BudgetLimits, check, check_all

DAY = BudgetLimits(daily=50.0)
MONTH = BudgetLimits(monthly=1000.0)
BOTH = BudgetLimits(daily=50.0, monthly=1000.0)


@pytest.mark.parametrize(
    ("today", "month", "limits", "allowed", "warning", "reason"),
    [
        (0.0, 0.0, BudgetLimits(), True, False, "user alice: no budget limit"),
        (10.0, 10.0, DAY, True, False, "user alice: within budget (10.00 of 50.00 USD daily)"),
        (
            10.0,
            100.0,
            BOTH,
            True,
            False,
            "user alice: within budget (10.00 of 50.00 USD daily, 100.00 of 1000.00 USD monthly)",
        ),
        (39.99, 39.99, DAY, True, False, "user alice: within budget (39.99 of 50.00 USD daily)"),
        (
            40.0,
            40.0,
            DAY,
            True,
            True,
            "user alice: warning: 40.00 USD of the 50.00 USD daily budget spent (80%)",
        ),
        (
            49.99,
            49.99,
            DAY,
            True,
            True,
            "user alice: warning: 49.99 USD of the 50.00 USD daily budget spent (99%)",
        ),
        (
            0.0552,
            0.0552,
            BudgetLimits(daily=0.06),
            True,
            True,
            "user alice: warning: 0.055 USD of the 0.060 USD daily budget spent (92%)",
        ),
        (
            50.0,
            50.0,
            DAY,
            False,
            False,
            "user alice: 50.00 USD spent of the 50.00 USD daily budget; new sessions are refused "
            "until the day ends",
        ),
        (
            75.0,
            75.0,
            DAY,
            False,
            False,
            "user alice: 75.00 USD spent of the 50.00 USD daily budget; new sessions are refused "
            "until the day ends",
        ),
        (
            0.0,
            800.0,
            MONTH,
            True,
            True,
            "user alice: warning: 800.00 USD of the 1000.00 USD monthly budget spent (80%)",
        ),
        (
            45.0,
            900.0,
            BOTH,
            True,
            True,
            "user alice: warning: 45.00 USD of the 50.00 USD daily budget spent (90%); "
            "900.00 USD of the 1000.00 USD monthly budget spent (90%)",
        ),
        (
            0.0,
            1000.0,
            BOTH,
            False,
            False,
            "user alice: 1000.00 USD spent of the 1000.00 USD monthly budget; new sessions are "
            "refused until the month ends",
        ),
        (
            60.0,
            1200.0,
            BOTH,
            False,
            False,
            "user alice: 1200.00 USD spent of the 1000.00 USD monthly budget; new sessions are "
            "refused until the month ends",
        ),  # both spent: the month is named, it blocks longer
        (
            0.0,
            0.0,
            BudgetLimits(daily=0.0),
            False,
            False,
            "user alice: 0.00 USD spent of the 0.00 USD daily budget; new sessions are refused "
            "until the day ends",
        ),
        (
            1.0,
            1.0,
            BudgetLimits(daily=10.0, currency="SGD"),
            True,
            False,
            "user alice: within budget (1.00 of 10.00 SGD daily)",
        ),
    ],
)
def test_check(
    today: float,
    month: float,
    limits: BudgetLimits,
    allowed: bool,
    warning: bool,
    reason: str,
) -> None:
    assert check(today, month, limits, "user alice") == BudgetDecision(allowed, warning, reason)


def test_warning_threshold_is_adjustable() -> None:
    assert not check(40.0, 0.0, DAY, warn_at=0.9).warning
    assert check(45.0, 0.0, DAY, warn_at=0.9).warning
    assert check(10.0, 0.0, DAY).reason.startswith("budget: ")


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_limits_must_be_amounts(bad: float) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        BudgetLimits(daily=bad)
    with pytest.raises(ValueError, match="non-negative"):
        BudgetLimits(monthly=bad)


OK = BudgetDecision(True, False, "user alice: within budget")
WARN_USER = BudgetDecision(True, True, "user alice: warning: a")
WARN_TEAM = BudgetDecision(True, True, "team ml: warning: b")
NO_TEAM = BudgetDecision(False, False, "team ml: spent")
NO_USER = BudgetDecision(False, False, "user alice: spent")


@pytest.mark.parametrize(
    ("decisions", "expected"),
    [
        ([], BudgetDecision(True, False, "no budget limit")),
        ([OK], OK),
        ([OK, WARN_TEAM], WARN_TEAM),
        (
            [WARN_USER, WARN_TEAM],
            BudgetDecision(True, True, f"{WARN_USER.reason}; {WARN_TEAM.reason}"),
        ),
        ([WARN_USER, NO_TEAM], NO_TEAM),
        ([NO_USER, NO_TEAM], NO_USER),
        (
            [OK, BudgetDecision(True, False, "team ml: x")],
            BudgetDecision(True, False, f"{OK.reason}; team ml: x"),
        ),
    ],
)
def test_check_all(decisions: list[BudgetDecision], expected: BudgetDecision) -> None:
    assert check_all(decisions) == expected


def test_a_warning_notice_says_warning_once() -> None:
    user = check(45.0, 45.0, DAY, "user alice")
    team = check(0.0552, 0.0, BudgetLimits(daily=0.06), "team ml")
    combined = check_all([user, team])
    assert combined.notice == (
        "warning: user alice: 45.00 USD of the 50.00 USD daily budget spent (90%); "
        "team ml: 0.055 USD of the 0.060 USD daily budget spent (92%)"
    )
    assert combined.notice.count("warning") == 1
