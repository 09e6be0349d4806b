"""Coalescing refusal audit events, so a flood costs a bounded number of rows.

Each *scope* (one SSH connection, or the listener for pre-auth refusals) may
write ``per_s`` events a second. An event names a ``key`` (what makes two
refusals "the same", usually the reason): the first of a key is written at once,
repeats within ``window_s`` are counted, and when the window ends one summary
event with ``repeated: N`` is written. Once the scope's budget for the second is
spent, further events of a kind are counted under one overflow key per kind.

So per scope per window at most ``per_s`` first events, as many summaries, and
one overflow summary per kind: bounded, whatever the client sends. Memory is
bounded the same way, and the number of scopes by ``max_scopes`` (the oldest
is closed, its summaries due at once).

Pure: the clock is passed in; the caller writes what ``offer`` admits and what
``due``/``close`` return.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

OVERFLOW = "*"  # the key events fall under once the scope's budget is spent


@dataclass(frozen=True, slots=True)
class Summary:
    """One event to write: ``data`` is the first event's data plus the counts."""

    kind: str
    actor: str
    data: Mapping[str, object]


@dataclass(slots=True)
class _Held:
    kind: str
    actor: str
    data: Mapping[str, object]
    until: float
    window_s: float
    count: int = 0

    def summary(self, overflow: bool) -> Summary:
        data = dict(self.data)
        data["repeated"] = self.count
        data["window_s"] = self.window_s
        data["coalesced"] = "budget" if overflow else "repeat"
        return Summary(self.kind, self.actor, data)


@dataclass(slots=True)
class _Scope:
    second: float = -1.0
    spent: int = 0
    held: dict[tuple[str, str], _Held] = field(default_factory=dict)


class AuditCoalescer:
    """Which refusal events to write now, and the summaries of those held back.

    >>> c = AuditCoalescer(per_s=2, clock=lambda: 0.0)
    >>> [c.offer("conn", "channel.deny", "r", "u", {}) for _ in range(3)]
    [True, False, False]
    >>> [s.data["repeated"] for s in c.close("conn")]
    [2]
    """

    def __init__(
        self,
        per_s: int,
        *,
        max_scopes: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_s = per_s
        self._max_scopes = max_scopes
        self.clock = clock
        self._scopes: OrderedDict[str, _Scope] = OrderedDict()
        self._evicted: list[Summary] = []

    def offer(
        self,
        scope: str,
        kind: str,
        key: str,
        actor: str,
        data: Mapping[str, object],
        window_s: float = 1.0,
    ) -> bool:
        """Count one event; True when the caller should write it now."""
        now = self.clock()
        s = self._scopes.get(scope)
        if s is None:
            s = self._scopes[scope] = _Scope()
            while len(self._scopes) > self._max_scopes:
                _, old = self._scopes.popitem(last=False)
                self._evicted += [
                    h.summary(k[1] == OVERFLOW) for k, h in old.held.items() if h.count
                ]
        held = s.held.get((kind, key))
        if held is not None and now < held.until:
            held.count += 1
            return False
        if held is not None:  # its window is over: summarise, then treat as new
            del s.held[(kind, key)]
            if held.count:
                self._evicted.append(held.summary(False))
        if now - s.second >= 1.0:  # a new second: a fresh budget; forget ended windows
            s.second, s.spent = now, 0
            for k, h in list(s.held.items()):
                if now >= h.until:
                    del s.held[k]
                    if h.count:
                        self._evicted.append(h.summary(k[1] == OVERFLOW))
        if s.spent < self._per_s:
            s.spent += 1
            s.held[(kind, key)] = _Held(kind, actor, data, now + window_s, window_s)
            return True
        over = s.held.get((kind, OVERFLOW))
        if over is None:
            s.held[(kind, OVERFLOW)] = _Held(kind, actor, data, now + window_s, window_s, 1)
        else:
            over.count += 1
        return False

    def due(self) -> list[Summary]:
        """Summaries whose window has ended (and of scopes evicted for room)."""
        now = self.clock()
        out, self._evicted = self._evicted, []
        for scope in list(self._scopes):
            s = self._scopes[scope]
            for k, h in list(s.held.items()):
                if now >= h.until:
                    del s.held[k]
                    if h.count:
                        out.append(h.summary(k[1] == OVERFLOW))
            if not s.held:
                del self._scopes[scope]
        return out

    def next_due(self) -> float | None:
        """When ``due`` next has something to return (clock time), or None."""
        if self._evicted:
            return self.clock()
        ends = [h.until for s in self._scopes.values() for h in s.held.values() if h.count]
        return min(ends) if ends else None

    def scopes(self) -> list[str]:
        """Scopes holding counts (at shutdown, each is closed)."""
        return list(self._scopes)

    def close(self, scope: str) -> list[Summary]:
        """The scope ended (its connection closed): all its summaries, now."""
        s = self._scopes.pop(scope, None)
        if s is None:
            return []
        return [h.summary(k[1] == OVERFLOW) for k, h in s.held.items() if h.count]
