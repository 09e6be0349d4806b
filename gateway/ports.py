"""The Protocols the services depend on; their implementations are adapters.

- ``AuditStore``: the append-only audit log (``gateway.adapters.audit.store.open_store``
  opens one from a URL; ``MemoryAuditStore`` is the in-package fake for unit tests),
  with ``append_within``, its fail-closed append;
- ``HostLink``: what a host probe measures through (``SshHostLink`` is the real one).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Mapping
from typing import Protocol

from gateway.domain.audit.chain import AuditEvent, VerifyResult
from gateway.domain.inventory.gpus import GpuInventory
from gateway.errors import StorageError


class AuditStore(Protocol):
    """Append-only, hash-chained audit events."""

    async def append(self, kind: str, actor: str, data: Mapping[str, object]) -> AuditEvent:
        """Add one event and return it once it is durably committed.

        Acknowledged means durable: when this returns, the event survives a crash.
        If it raises ``StorageError``, the event was not committed. ``data`` must
        be JSON with string keys (``ValueError`` otherwise). An append that is
        cancelled may or may not have been committed.

        >>> import asyncio

        >>> from gateway.adapters.audit.store import open_store
        >>> async def main() -> tuple[int, bool]:
        ...     store = open_store("memory://")
        ...     event = await store.append("session.open", "alice", {"host": "sg-1"})
        ...     await store.close()
        ...     return event.id, event.prev_hash == "0" * 64
        >>> asyncio.run(main())
        (1, True)
        """
        ...

    async def list(
        self,
        *,
        kind: str | None = None,
        actor: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> builtins.list[AuditEvent]:
        """Events with id > ``after_id``, oldest first, at most ``limit``; page with the last id.

        >>> import asyncio

        >>> from gateway.adapters.audit.store import open_store
        >>> async def main() -> list[int]:
        ...     store = open_store("memory://")
        ...     for who in ("alice", "bob", "alice"):
        ...         await store.append("session.open", who, {})
        ...     page = await store.list(actor="alice", after_id=1, limit=10)
        ...     await store.close()
        ...     return [e.id for e in page]
        >>> asyncio.run(main())
        [3]
        """
        ...

    async def verify(self) -> VerifyResult:
        """Walk the whole chain and report the first broken link, if any.

        >>> import asyncio

        >>> from gateway.adapters.audit.store import open_store
        >>> async def main() -> tuple[bool, int]:
        ...     store = open_store("memory://")
        ...     await store.append("policy.deny", "bob", {"reason": "no role for sg-1"})
        ...     result = await store.verify()
        ...     await store.close()
        ...     return result.ok, result.count
        >>> asyncio.run(main())
        (True, 1)
        """
        ...

    async def close(self) -> None:
        """Commit what is already queued, then release the store; later appends fail.

        >>> import asyncio

        >>> from gateway.adapters.audit.store import open_store
        >>> async def main() -> str:
        ...     store = open_store("memory://")
        ...     await store.close()
        ...     try:
        ...         await store.append("x", "y", {})
        ...     except Exception as exc:
        ...         return type(exc).__name__
        ...     return "appended"
        >>> asyncio.run(main())
        'StorageError'
        """
        ...


async def append_within(
    store: AuditStore, kind: str, actor: str, data: Mapping[str, object], timeout_s: float
) -> AuditEvent:
    """``append``, but give up after ``timeout_s`` with ``StorageError`` (fail closed).

    For events a user is waiting on (a session start) while the database may be
    down: the event is withdrawn if it has not been sent yet, so a refused
    session normally leaves no start event; one already being committed when
    the time ran out may still land (as for any cancelled append).
    """
    try:
        return await asyncio.wait_for(store.append(kind, actor, data), timeout_s)
    except TimeoutError:
        raise StorageError(
            f"audit log unavailable: {kind} not committed within {timeout_s:g} s"
        ) from None


class HostLink(Protocol):
    """What a ``HostProbe`` needs from a host; ``SshHostLink`` is the real one."""

    async def round_trip_ms(self) -> float:
        """One SSH-level round trip, connecting first if needed; raises ``UpstreamError``.

        >>> await link.round_trip_ms()  # doctest: +SKIP
        0.42
        """
        ...

    async def tcp_connect_ms(self) -> float:
        """One fresh TCP connect to the host; raises ``UpstreamError``.

        >>> await link.tcp_connect_ms()  # doctest: +SKIP
        0.11
        """
        ...

    async def gpus(self) -> GpuInventory:
        """The host's GPUs as nvidia-smi reports them; raises ``UpstreamError``.

        >>> (await link.gpus()).state  # doctest: +SKIP
        'ok'
        """
        ...

    def take_connect_ms(self) -> float | None:
        """The TCP connect time of a connection made since the last call, once.

        >>> link.take_connect_ms()  # doctest: +SKIP
        0.12
        """
        ...

    def reset(self) -> None:
        """Drop the kept connection; the next call reconnects.

        >>> link.reset()  # doctest: +SKIP
        """
        ...

    async def close(self) -> None:
        """Close for good.

        >>> await link.close()  # doctest: +SKIP
        """
        ...
