"""HostProbe rounds, state changes and statistics, driven by a fake link and clock."""

from __future__ import annotations

import asyncio
from collections import deque

import asyncssh
import pytest

from gateway.adapters.hosts.hostprobe import HostProbe
from gateway.domain.inventory.gpus import Gpu, GpuInventory
from gateway.domain.inventory.latency import ProbeSample, median, percentile, summarize
from gateway.errors import UpstreamError

HANG = "hang"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeLink:
    """Answers from a script: a float is an RTT, an exception is raised, HANG never answers."""

    def __init__(self, clock: FakeClock, *script: float | Exception | str) -> None:
        self.clock = clock
        self.script: deque[float | Exception | str] = deque(script)
        self.resets = self.tcp_calls = self.gpu_calls = self.closed = 0
        self.connect_ms: float | None = None
        self.gpu_answer: GpuInventory | Exception = GpuInventory("ok", (Gpu(0, "GPU-a", "L4"),))
        self.round_cost_s = 0.0

    async def round_trip_ms(self) -> float:
        step = self.script.popleft() if self.script else 1.0
        self.clock.now += self.round_cost_s
        if isinstance(step, Exception):
            raise step
        if step == HANG:
            await asyncio.Event().wait()
        assert isinstance(step, float)
        return step

    async def tcp_connect_ms(self) -> float:
        self.tcp_calls += 1
        return 0.25

    async def gpus(self) -> GpuInventory:
        self.gpu_calls += 1
        if isinstance(self.gpu_answer, Exception):
            raise self.gpu_answer
        return self.gpu_answer

    def take_connect_ms(self) -> float | None:
        value, self.connect_ms = self.connect_ms, None
        return value

    def reset(self) -> None:
        self.resets += 1

    async def close(self) -> None:
        self.closed += 1


def make(
    *script: float | Exception | str, **options: float
) -> tuple[HostProbe, FakeLink, FakeClock]:
    clock = FakeClock()
    link = FakeLink(clock, *script)
    settings: dict[str, float] = {
        "interval_s": 1.0,
        "timeout_s": 0.05,
        "gpu_interval_s": 0.0,
        "tcp_interval_s": 0.0,
    }
    settings.update(options)
    probe = HostProbe(
        "sg-1",
        link,
        interval_s=settings["interval_s"],
        timeout_s=settings["timeout_s"],
        gpu_interval_s=settings["gpu_interval_s"],
        tcp_interval_s=settings["tcp_interval_s"],
        history=int(settings.get("history", 120)),
        window=int(settings.get("window", 30)),
        clock=clock,
        sleep=clock.sleep,
    )
    return probe, link, clock


async def test_unknown_until_the_first_round() -> None:
    probe, _, _ = make()
    status = probe.status()
    assert (status.state, status.since, status.latency.median_ms, status.history) == (
        "unknown",
        None,
        None,
        (),
    )


async def test_answers_make_it_up_with_stats() -> None:
    probe, _, clock = make(4.0, 2.0, 3.0)
    await probe.run(rounds=3)
    status = probe.status()
    assert status.up and status.since == 100.0 and status.failures == 0
    assert status.history == (4.0, 2.0, 3.0)
    assert (status.latency.last_ms, status.latency.median_ms, status.latency.p95_ms) == (
        3.0,
        3.0,
        4.0,
    )
    assert clock.sleeps == [1.0, 1.0]  # no sleep after the last of a bounded run


async def test_missed_deadline_marks_down_at_once_and_drops_the_connection() -> None:
    probe, link, clock = make(5.0, HANG, 6.0)
    await probe.probe_once()
    clock.now += 1
    status = await probe.probe_once()
    assert status.state == "down" and status.since == 101.0
    assert status.error == "no answer within 0.05 s" and status.failures == 1
    assert link.resets == 1
    clock.now += 1
    status = await probe.probe_once()
    assert status.state == "up" and status.since == 102.0 and status.error == ""
    assert status.history == (5.0, None, 6.0)
    assert status.latency.median_ms == 5.5  # misses are gaps, not zeros


async def test_errors_mark_down_and_count_failures() -> None:
    probe, link, _ = make(
        UpstreamError("TCP connect to 127.0.0.1:1: Connection refused"),
        UpstreamError("again"),
        RuntimeError("bug in a link"),
    )
    await probe.run(rounds=3)
    status = probe.status()
    assert status.state == "down" and status.failures == 3 and status.since == 100.0
    assert status.error == "probe failed: RuntimeError: bug in a link"
    assert link.resets == 3 and status.latency.samples == 0


async def test_history_is_a_bounded_ring_and_stats_use_the_window() -> None:
    probe, _, _ = make(*(float(i) for i in range(1, 11)), history=4, window=3)
    await probe.run(rounds=10)
    status = probe.status()
    assert status.history == (7.0, 8.0, 9.0, 10.0)
    assert (status.latency.median_ms, status.latency.samples) == (9.0, 3)


async def test_sleep_subtracts_the_time_a_round_took() -> None:
    probe, link, clock = make(interval_s=1.0)
    link.round_cost_s = 0.3
    await probe.run(rounds=3)
    assert clock.sleeps == pytest.approx([0.7, 0.7])
    link.round_cost_s = 5.0  # a slow round does not make a negative sleep
    await probe.run(rounds=2)
    assert clock.sleeps[-1] == 0.0


async def test_gpus_and_tcp_are_checked_on_their_own_schedules() -> None:
    probe, link, clock = make(gpu_interval_s=10.0, tcp_interval_s=30.0)
    link.connect_ms = 0.5  # the link connected during the first round
    await probe.run(rounds=35)  # 1 s apart
    assert link.gpu_calls == 4  # at 0, 10, 20, 30 s
    assert link.tcp_calls == 1  # at 30 s: the connect at 0 s counted as the first
    status = probe.status()
    assert status.tcp_connect_ms == 0.25
    assert status.gpus is not None and status.gpus.count == 1
    assert clock.now == pytest.approx(134.0)


async def test_gpu_failure_is_a_state_not_a_down_host() -> None:
    probe, link, _ = make(gpu_interval_s=5.0)
    link.gpu_answer = UpstreamError("nvidia-smi over SSH failed: channel closed")
    status = await probe.probe_once()
    assert status.up
    assert status.gpus == GpuInventory(
        "error", message="nvidia-smi over SSH failed: channel closed"
    )


async def test_no_gpu_query_while_down() -> None:
    probe, link, _ = make(UpstreamError("refused"), gpu_interval_s=1.0)
    await probe.probe_once()
    assert link.gpu_calls == 0 and probe.status().gpus is None


async def test_close_closes_the_link() -> None:
    probe, link, _ = make()
    await probe.close()
    assert link.closed == 1


@pytest.mark.parametrize(
    "options",
    [{"interval_s": 0.0}, {"timeout_s": -1.0}, {"history": 0.0}, {"window": 0.0}],
)
def test_bad_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        make(**options)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([7.0], 95, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([5.0, 1.0, 3.0], 50, 3.0),
        ([float(i) for i in range(1, 101)], 95, 95.0),
        ([float(i) for i in range(1, 21)], 95, 19.0),
        ([float(i) for i in range(1, 20)], 95, 19.0),  # fewer than 20: the largest
        ([3.0, 1.0], 100, 3.0),
    ],
)
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize("q", [0, -1, 101])
def test_percentile_range(q: float) -> None:
    with pytest.raises(ValueError, match="not in"):
        percentile([1.0], q)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([3.0], 3.0), ([4.0, 1.0], 2.5), ([9.0, 1.0, 5.0], 5.0)],
)
def test_median(values: list[float], expected: float | None) -> None:
    assert median(values) == expected


def test_summarize_skips_misses() -> None:
    samples = [ProbeSample(0, 1.0), ProbeSample(1, None, "x"), ProbeSample(2, 3.0)]
    stats = summarize(samples, window=10)
    assert (stats.last_ms, stats.median_ms, stats.p95_ms, stats.samples) == (3.0, 2.0, 3.0, 2)
    assert summarize([ProbeSample(0, None, "x")], 10).median_ms is None


def test_asyncssh_still_has_the_global_request_hook() -> None:
    """ssh_rtt_ms relies on the method asyncssh's own keepalive uses."""
    assert callable(getattr(asyncssh.SSHClientConnection, "_make_global_request", None))
