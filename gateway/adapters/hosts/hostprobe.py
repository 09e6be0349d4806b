"""The probe loop for one host: rounds on a schedule, up/down state, RTT history.

``HostProbe`` drives a ``HostLink`` (the port; ``probes.SshHostLink`` is the
real one, over a kept SSH connection) every ``interval_s``:

* one SSH-level round trip (``HostLink.round_trip_ms``);
* every ``gpu_interval_s``, the GPU inventory (``HostLink.gpus``);
* every ``tcp_interval_s``, a fresh TCP connect (``HostLink.tcp_connect_ms``);
  a reconnect's own connect time counts too, so a kept connection costs no
  extra handshakes.

A round that does not answer within ``timeout_s`` (or fails) marks the host
down at once and resets the link, since a kept connection that missed a
deadline may be wedged; the next round reconnects, and the first answer marks
the host up. With the defaults (1 s interval, 2 s timeout) a host that stops
answering is down within 3 s, and up within about 1 s plus a login once it
is back. GPU and TCP failures are recorded but never mark a host down: the
round trip answered.

No asyncssh here; the clock and sleep are injectable, so unit tests drive
rounds with a fake link and a fake clock.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.domain.inventory.gpus import GpuInventory
from gateway.domain.inventory.latency import (
    HostState,
    LatencyStats,
    ProbeSample,
    sparkline,
    summarize,
)
from gateway.errors import UpstreamError
from gateway.ports import HostLink


@dataclass(frozen=True, slots=True)
class HostStatus:
    """What the gateway knows about one host right now (probe clock times, seconds)."""

    name: str
    state: HostState
    since: float | None  # when the state last changed
    checked_at: float | None  # when the last round finished
    latency: LatencyStats
    history: tuple[float | None, ...]  # RTT ms, oldest first; None = missed round
    tcp_connect_ms: float | None
    gpus: GpuInventory | None  # None until the first query
    error: str  # why the last round failed ("" when it answered)
    failures: int  # rounds missed in a row

    @property
    def up(self) -> bool:
        return self.state == "up"


class HostProbe:
    """Probes one host on a schedule; see the module docstring.

    ``clock`` stamps samples and schedules GPU and TCP checks; ``sleep`` waits
    between rounds. Both are injectable so tests can drive rounds without
    waiting; ``timeout_s`` is enforced on the running event loop's time.
    """

    def __init__(
        self,
        name: str,
        link: HostLink,
        *,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
        history: int = 120,
        window: int = 30,
        gpu_interval_s: float = 10.0,
        tcp_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if interval_s <= 0 or timeout_s <= 0 or history < 1 or window < 1:
            raise ValueError("interval_s, timeout_s, history and window must be positive")
        self.name, self.link = name, link
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.window = window
        self.gpu_interval_s, self.tcp_interval_s = gpu_interval_s, tcp_interval_s
        self._clock, self._sleep = clock, sleep
        self._samples: deque[ProbeSample] = deque(maxlen=history)
        self._state: HostState = "unknown"
        self._since: float | None = None
        self._checked_at: float | None = None
        self._failures = 0
        self._error = ""
        self._tcp_ms: float | None = None
        self._tcp_at: float | None = None
        self._gpus: GpuInventory | None = None
        self._gpus_at: float | None = None

    def status(self) -> HostStatus:
        """A frozen snapshot, cheap enough to call on every API request."""
        return HostStatus(
            name=self.name,
            state=self._state,
            since=self._since,
            checked_at=self._checked_at,
            latency=summarize(self._samples, self.window),
            history=sparkline(self._samples),
            tcp_connect_ms=self._tcp_ms,
            gpus=self._gpus,
            error=self._error,
            failures=self._failures,
        )

    async def probe_once(self) -> HostStatus:
        """One round: round trip, then GPUs and TCP connect when due."""
        try:
            async with asyncio.timeout(self.timeout_s):
                rtt_ms = await self.link.round_trip_ms()
        except TimeoutError:
            self.link.reset()
            self._record_failure(f"no answer within {self.timeout_s:g} s")
            return self.status()
        except UpstreamError as exc:
            self.link.reset()
            self._record_failure(str(exc))
            return self.status()
        except Exception as exc:  # a bug in one link must not end the probe loop
            self.link.reset()
            self._record_failure(f"probe failed: {type(exc).__name__}: {exc}")
            return self.status()
        now = self._clock()
        self._samples.append(ProbeSample(now, rtt_ms))
        self._checked_at, self._failures, self._error = now, 0, ""
        self._set_state("up", now)
        connect_ms = self.link.take_connect_ms()
        if connect_ms is not None:
            self._tcp_ms, self._tcp_at = connect_ms, now
        if self.tcp_interval_s > 0 and _due(self._tcp_at, self.tcp_interval_s, now):
            await self._check_tcp(now)
        if self.gpu_interval_s > 0 and _due(self._gpus_at, self.gpu_interval_s, now):
            await self._check_gpus(now)
        return self.status()

    async def run(self, rounds: int | None = None) -> None:
        """Probe every ``interval_s`` until cancelled (or for ``rounds`` rounds)."""
        done = 0
        while rounds is None or done < rounds:
            started = self._clock()
            await self.probe_once()
            done += 1
            if rounds is None or done < rounds:
                await self._sleep(max(0.0, self.interval_s - (self._clock() - started)))

    async def close(self) -> None:
        await self.link.close()

    async def _check_tcp(self, now: float) -> None:
        self._tcp_at = now
        try:
            async with asyncio.timeout(self.timeout_s):
                self._tcp_ms = await self.link.tcp_connect_ms()
        except (TimeoutError, UpstreamError):
            self._tcp_ms = None  # the SSH round trip answered; do not call the host down

    async def _check_gpus(self, now: float) -> None:
        self._gpus_at = now
        try:
            async with asyncio.timeout(self.timeout_s):
                self._gpus = await self.link.gpus()
        except TimeoutError:
            self._gpus = GpuInventory("error", message=f"no answer within {self.timeout_s:g} s")
        except UpstreamError as exc:
            self._gpus = GpuInventory("error", message=str(exc))

    def _record_failure(self, error: str) -> None:
        now = self._clock()
        self._samples.append(ProbeSample(now, None, error))
        self._checked_at, self._error = now, error
        self._failures += 1
        self._set_state("down", now)

    def _set_state(self, state: HostState, now: float) -> None:
        if state != self._state:
            self._state, self._since = state, now


def _due(last: float | None, every: float, now: float) -> bool:
    return last is None or now - last >= every
