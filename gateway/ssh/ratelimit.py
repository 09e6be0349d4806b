"""Failed-login rate limiting per source address.

A sliding window of failure times per address: once ``max_failures`` land
inside ``window_s``, the address is refused for ``ban_s``. The table is bounded
so a scan from many addresses cannot grow it without limit. Per process: with
``--workers N`` each worker keeps its own table.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class FailureLimiter:
    def __init__(
        self,
        max_failures: int,
        window_s: float,
        ban_s: float,
        *,
        max_addresses: int = 65536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._window = window_s
        self._ban = ban_s
        self._max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._banned_until: dict[str, float] = {}

    def banned(self, address: str) -> bool:
        until = self._banned_until.get(address)
        if until is None:
            return False
        if self._clock() >= until:
            del self._banned_until[address]
            self._failures.pop(address, None)
            return False
        return True

    def record_failure(self, address: str) -> bool:
        """Count one failure; return True when this failure starts a ban."""
        now = self._clock()
        times = self._failures.get(address)
        if times is None:
            times = self._failures[address] = deque(maxlen=self._max)
            while len(self._failures) > self._max_addresses:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(address)
        times.append(now)
        while times and now - times[0] > self._window:
            times.popleft()
        if len(times) >= self._max and address not in self._banned_until:
            self._banned_until[address] = now + self._ban
            return True
        return False

    def record_success(self, address: str) -> None:
        self._failures.pop(address, None)
