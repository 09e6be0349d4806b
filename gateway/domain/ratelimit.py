"""Failed-authentication limiting per (source address, subject): credentials, not addresses.

The subject is what a failure tried to log in as: the SSH user name, or for the
API the token (its id when storage knows it, else its first characters) or
``anonymous``. Once ``max_failures`` land inside ``window_s`` for one pair, the
pair is banned for ``ban_s``; once ``address_max_failures`` land for one
address, whatever the subjects, the address is banned too.

A ban never refuses a valid credential. Keys, certificates and 256-bit tokens
cannot be guessed, so a ban has nothing to protect by locking out the people
who hold them, and a shared address (NAT, an office, a TLS proxy) must not let
one user's typos or an attacker's scan lock everyone else out. What a ban does:
failures under it are refused cheaply (the API answers 429 instead of 401) and
are no longer audited one by one (the ban itself is audited once), so a scan
cannot fill the audit log, whichever subjects it rotates through.

Both tables are bounded (``max_entries`` each, oldest dropped first) so a scan
from many addresses cannot grow them without limit. Per process: with
``--workers N`` each worker keeps its own tables.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

ANONYMOUS = "anonymous"


class _Windows:
    """Sliding windows of failure times and bans, per key, bounded in keys."""

    def __init__(
        self, limit: int, window_s: float, ban_s: float, max_keys: int, clock: Callable[[], float]
    ) -> None:
        self._limit = limit
        self._window = window_s
        self._ban = ban_s
        self._max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._banned_until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return max(len(self._failures), len(self._banned_until))

    def banned(self, key: str) -> bool:
        until = self._banned_until.get(key)
        if until is None:
            return False
        if self._clock() >= until:
            del self._banned_until[key]
            self._failures.pop(key, None)
            return False
        return True

    def failure(self, key: str) -> bool:
        """Count one failure; True when it starts a ban."""
        now = self._clock()
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self._limit)
            while len(self._failures) > self._max_keys:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(key)
        times.append(now)
        while times and now - times[0] > self._window:
            times.popleft()
        if len(times) >= self._limit and not self.banned(key):
            self._banned_until[key] = now + self._ban
            while len(self._banned_until) > self._max_keys:
                self._banned_until.popitem(last=False)
            return True
        return False

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)


class FailureLimiter:
    """Counts failed authentications per (address, subject) and per address.

    >>> now = [0.0]
    >>> limiter = FailureLimiter(2, 60, 60, address_max_failures=3, clock=lambda: now[0])
    >>> limiter.record_failure("10.0.0.1", "alice"), limiter.record_failure("10.0.0.1", "alice")
    (False, True)
    >>> limiter.banned("10.0.0.1", "alice"), limiter.banned("10.0.0.1", "bob")
    (True, False)
    >>> limiter.record_failure("10.0.0.1", "bob"), limiter.banned("10.0.0.1", "bob")
    (True, True)
    >>> now[0] = 61.0
    >>> limiter.banned("10.0.0.1", "alice"), limiter.banned("10.0.0.1", "bob")
    (False, False)
    """

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        ban_s: float,
        *,
        address_max_failures: int | None = None,
        max_entries: int = 65536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        per_address = address_max_failures if address_max_failures else 10 * max_failures
        self._pairs = _Windows(max_failures, window_s, ban_s, max_entries, clock)
        self._addresses = _Windows(per_address, window_s, ban_s, max_entries, clock)

    @staticmethod
    def _pair(address: str, subject: str) -> str:
        return f"{address}\x00{subject or ANONYMOUS}"

    @property
    def entries(self) -> int:
        """The most keys either table holds now (bounded by ``max_entries``)."""
        return max(len(self._pairs), len(self._addresses))

    def banned(self, address: str, subject: str) -> bool:
        """Whether failures of ``subject`` from ``address`` are under a ban now
        (the pair's own, or the address's)."""
        pair = self._pairs.banned(self._pair(address, subject))
        return self._addresses.banned(address) or pair

    def record_failure(self, address: str, subject: str) -> bool:
        """Count one failure; True when this failure starts a ban (audit that once)."""
        pair = self._pairs.failure(self._pair(address, subject))
        whole = self._addresses.failure(address)
        return pair or whole

    def record_success(self, address: str, subject: str) -> None:
        """A valid credential: its pair's count starts again (the address's does not)."""
        self._pairs.forget(self._pair(address, subject))
