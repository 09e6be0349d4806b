"""FailureLimiter: bans per (address, subject) and per address, in bounded tables."""

from __future__ import annotations

from gateway.domain.ratelimit import FailureLimiter


def _limiter(now: list[float], **kw: int) -> FailureLimiter:
    return FailureLimiter(3, 60, 120, clock=lambda: now[0], **kw)


def test_a_pair_ban_leaves_other_subjects_and_addresses_alone() -> None:
    now = [0.0]
    limiter = _limiter(now)
    starts = [limiter.record_failure("10.0.0.1", "alice") for _ in range(4)]
    assert starts == [False, False, True, False]  # the ban starts (and is audited) once
    assert limiter.banned("10.0.0.1", "alice")
    assert not limiter.banned("10.0.0.1", "bob")
    assert not limiter.banned("10.0.0.2", "alice")
    now[0] = 119.0
    assert limiter.banned("10.0.0.1", "alice")
    now[0] = 120.0
    assert not limiter.banned("10.0.0.1", "alice")


def test_failures_outside_the_window_do_not_add_up() -> None:
    now = [0.0]
    limiter = _limiter(now)
    for t in (0.0, 50.0, 111.0, 170.0):
        now[0] = t
        assert not limiter.record_failure("10.0.0.1", "alice")
    assert not limiter.banned("10.0.0.1", "alice")


def test_rotating_subjects_trip_the_address_ban() -> None:
    now = [0.0]
    limiter = _limiter(now, address_max_failures=5)
    starts = [limiter.record_failure("10.0.0.1", f"user{n}") for n in range(5)]
    assert starts == [False] * 4 + [True]
    assert limiter.banned("10.0.0.1", "anyone-else")
    assert not limiter.banned("10.0.0.2", "anyone-else")


def test_success_resets_only_its_own_pair() -> None:
    now = [0.0]
    limiter = _limiter(now, address_max_failures=100)
    for _ in range(2):
        limiter.record_failure("10.0.0.1", "alice")
        limiter.record_failure("10.0.0.1", "bob")
    limiter.record_success("10.0.0.1", "alice")
    assert not limiter.record_failure("10.0.0.1", "alice")  # alice starts again at 1
    assert limiter.record_failure("10.0.0.1", "bob")  # bob's third failure bans


def test_tables_are_bounded_under_a_scan_from_many_addresses() -> None:
    now = [0.0]
    limiter = FailureLimiter(1, 60, 600, max_entries=100, clock=lambda: now[0])
    for n in range(10_000):
        limiter.record_failure(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", f"u{n}")
    assert limiter.entries == 100
    # The newest bans are the ones kept.
    assert limiter.banned("10.0.39.15", "u9999")
    assert not limiter.banned("10.0.0.0", "u0")
