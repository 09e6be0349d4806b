"""Making directory changes, and keeping a running gateway's view of the directory current.

A change is checked against the newest stored version, audited, then written
(fail closed: if the audit log does not take the event within its bound, the
change is not made and the caller gets ``StorageError``). The write succeeds
only if nobody changed the directory since the check; otherwise the change is
checked again on the new version (a few times at most). Every change bumps
``directory_version``; :meth:`DirectoryService.watch` polls that number so a
gateway picks up changes made through another replica or the local CLI.

``on_change`` receives each new :class:`DirectoryView`; the gateway builds a
new inventory from it and swaps it in whole (one assignment on the event
loop), so a request sees either the old directory or the new one; the swap
also closes live sessions the new directory no longer allows
(:mod:`gateway.services.sessions.authority`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from gateway.adapters.storage.directory import DirectoryStore, VersionMoved
from gateway.config import changes as ch
from gateway.config.loader import Settings
from gateway.domain.inventory.keys import parse_public_key
from gateway.errors import (
    DirectoryConflict,
    DirectoryError,
    DirectoryInvalid,
    GatewayError,
    KeyMaterialError,
    StorageError,
)
from gateway.ports import AuditStore, append_within
from gateway.services.directoryview import DirectoryView

log = structlog.get_logger("gpuhop.directory")

POLL_S = 2.0  # how often a gateway looks for changes made elsewhere
_TRIES = 3


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change: an admin token's user, or the local CLI's operator."""

    name: str
    token_id: str = ""
    source: str = ""

    def audit_data(self) -> dict[str, object]:
        data: dict[str, object] = {"by": self.name}
        if self.token_id:
            data["by_token"] = self.token_id
        if self.source:
            data["source"] = self.source
        return data


class DirectoryService:
    """The directory of one gateway process (or one CLI command)."""

    def __init__(
        self,
        settings: Settings,
        store: DirectoryStore,
        audit: AuditStore,
        *,
        audit_timeout_s: float = 5.0,
        on_change: Callable[[DirectoryView], None] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._audit = audit
        self._audit_timeout_s = audit_timeout_s
        self._on_change = on_change
        self._view = DirectoryView.build(settings)
        self._loaded = False
        self._lock = asyncio.Lock()

    @property
    def view(self) -> DirectoryView:
        """The directory as last loaded."""
        return self._view

    async def load(self) -> DirectoryView:
        """Read the stored directory, merge it with the config, and install it."""
        stored = await self._store.load()
        view = DirectoryView.build(self._settings, stored)
        self._install(view)
        return view

    def _install(self, view: DirectoryView) -> None:
        changed = view.version != self._view.version or not self._loaded
        self._view = view
        self._loaded = True
        if changed and self._on_change is not None:
            self._on_change(view)

    async def apply(self, change: ch.Change, actor: Actor) -> DirectoryView:
        """Check, audit and write ``change``; the directory after it.

        ``DirectoryError`` (one line) when the change is refused, ``StorageError``
        when storage or the audit log is unavailable (nothing changed then).
        """
        async with self._lock:
            audited = False
            for _ in range(_TRIES):
                view = await self.load()
                try:
                    view.check(change)
                except DirectoryError as exc:
                    if audited:  # a concurrent change made it invalid after it was audited
                        await self._audit_aborted(change, actor, str(exc))
                    raise
                if not audited:
                    data = {**change.audit_data(), **actor.audit_data()}
                    await append_within(
                        self._audit, change.event, actor.name, data, self._audit_timeout_s
                    )
                    audited = True
                try:
                    await self._store.apply(change, view.version, actor.name)
                except VersionMoved:
                    continue
                except StorageError as exc:
                    await self._audit_aborted(change, actor, str(exc))
                    raise
                log.info("directory changed", change=change.event, by=actor.name)
                return await self.load()
            reason = "the directory kept changing while this change was made; try again"
            await self._audit_aborted(change, actor, reason)
            raise DirectoryConflict(reason)

    async def _audit_aborted(self, change: ch.Change, actor: Actor, reason: str) -> None:
        """Say in the audit log that an audited change did not happen after all."""
        data = {"event": change.event, **change.audit_data(), **actor.audit_data()}
        data["reason"] = reason
        try:
            await append_within(
                self._audit, "admin.change.aborted", actor.name, data, self._audit_timeout_s
            )
        except Exception as exc:  # the change did not happen either way
            log.error("audit write failed", kind="admin.change.aborted", error=str(exc))

    async def watch(self, interval_s: float = POLL_S) -> None:
        """Reload whenever the stored version moves; runs until cancelled.

        Each poll is one small query, bounded by ``interval_s * 10``; a failed poll
        (storage down, a bad row) is logged and retried at the next tick.
        """
        while True:
            await asyncio.sleep(interval_s)
            try:
                version = await asyncio.wait_for(self._store.version(), interval_s * 10)
                if version != self._view.version:
                    async with self._lock:
                        await asyncio.wait_for(self.load(), interval_s * 10)
            except (GatewayError, TimeoutError) as exc:
                log.warning("directory poll failed", error=str(exc) or "timed out")


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a watch task and wait for it."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def key_fingerprint(key: str) -> str:
    """The SHA256 fingerprint ``key`` names: given as one, or a public key line."""
    key = key.strip()
    if key.startswith("SHA256:"):
        return key
    try:
        return parse_public_key(key).fingerprint
    except KeyMaterialError as exc:
        raise DirectoryInvalid(f"key: not a fingerprint or public key line: {exc}") from None
