"""What the gateway decides with, as one immutable snapshot behind one reference.

A :class:`Runtime` holds the directory (its view and the inventory built from
it) and the :class:`KeyRing` (user CA, host CA and host keys, the upstream key
and CA). Nothing copies it: the SSH front, the inner servers, the API, the
upstream pool, the live state and the KRL publisher hold the one
:class:`RuntimeRef` and read ``.current`` at the moment they decide. A
directory change or a key reload builds a new snapshot and swaps it in one
assignment, so every reader sees the old snapshot or the new one, never a mix;
that is what lets a revocation reach connections opened before it
(docs/security.md: "ask the current directory every time").

Readers that must act on a change register with :meth:`RuntimeRef.on_change`
(called in the swap, in registration order: enforcement closes what the new
directory no longer allows before anything else runs) or wait for one with
:meth:`RuntimeRef.changed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from gateway.adapters.keys import KeyRing
from gateway.domain.inventory.hosts import Inventory
from gateway.services.directoryview import DirectoryView


@dataclass(frozen=True, slots=True)
class Runtime:
    """One snapshot: the directory as loaded and the keys as loaded, together."""

    view: DirectoryView
    keys: KeyRing
    inventory: Inventory = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inventory", self.view.inventory())

    def with_view(self, view: DirectoryView) -> Runtime:
        return replace(self, view=view)

    def with_keys(self, keys: KeyRing) -> Runtime:
        return replace(self, keys=keys)


Listener = Callable[[Runtime, Runtime], None]  # (old, new)


class RuntimeRef:
    """The one reference to the current :class:`Runtime`, replaced whole."""

    def __init__(self, runtime: Runtime) -> None:
        self._current = runtime
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()

    @property
    def current(self) -> Runtime:
        return self._current

    def on_change(self, listener: Listener) -> None:
        """Call ``listener(old, new)`` in every swap, after ``current`` is the new one."""
        self._listeners.append(listener)

    def replace(self, runtime: Runtime) -> None:
        """Swap in ``runtime`` (one assignment), then tell the listeners and waiters."""
        old, self._current = self._current, runtime
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for listener in self._listeners:
            listener(old, runtime)

    async def changed(self, since: Runtime) -> Runtime:
        """The first snapshot after ``since`` (at once if ``current`` is already newer)."""
        while self._current is since:
            await self._changed.wait()
        return self._current
