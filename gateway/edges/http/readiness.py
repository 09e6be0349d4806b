"""``GET /v1/ready``: whether this replica should get traffic, apart from liveness.

``/v1/health`` says the process answers (liveness: restart it when it does
not). Readiness says more: the storage database answered a round trip within
``timeout_s``, the gateway's keys are loaded, and the gateway is not draining
after SIGTERM. A load balancer or a Kubernetes Service takes an unready
replica out of rotation without restarting it; it comes back by itself once
the database does.

At most one storage round trip is in flight: a probe that arrives while the
previous one still waits on an unreachable server shares its answer, so
probes never pile up worker threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import structlog

from gateway.errors import StorageError

log = structlog.get_logger("gpuhop.api.ready")

READY_TIMEOUT_S = 2.0

Unready = Literal["draining", "keys_missing", "storage_unreachable"]


@dataclass
class Readiness:
    """The parts of readiness that are not in the API context: storage and draining."""

    storage_ping: Callable[[], Awaitable[None]]
    """One round trip to the database (``Storage.ping``); raises ``StorageError``."""
    timeout_s: float = READY_TIMEOUT_S
    draining: bool = False
    """Set once at SIGTERM: the replica finishes its sessions but takes no new ones."""
    _inflight: asyncio.Future[None] | None = field(default=None, init=False, repr=False)

    async def problem(self, host_keys: Sequence[str]) -> tuple[Unready, str] | None:
        """None when ready; else a stable reason code and one line for people."""
        if self.draining:
            return "draining", "the gateway is draining its sessions before it stops"
        if not host_keys:
            return "keys_missing", "the gateway's host keys are not loaded"
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self.storage_ping())
        try:
            await asyncio.wait_for(asyncio.shield(self._inflight), self.timeout_s)
        except TimeoutError:
            return "storage_unreachable", f"storage did not answer within {self.timeout_s:g} s"
        except StorageError as exc:
            log.warning("not ready", reason="storage_unreachable", error=str(exc))
            return "storage_unreachable", "storage is unreachable"
        return None
