"""What every connection to the gateway shares: inventory, audit, CA, limits, live sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway.audit.store import AuditStore, append_within
from gateway.inventory.hosts import Inventory
from gateway.keys import UserCA
from gateway.models import Mode
from gateway.ssh.envstage import StagePolicy
from gateway.ssh.passadmit import PassthroughHolds
from gateway.ssh.ratelimit import FailureLimiter

if TYPE_CHECKING:
    import asyncssh

    from gateway.live import LiveState
    from gateway.ssh.upstream import UpstreamPool
    from gateway.storage.sessions import SessionStore

log = structlog.get_logger("gpuhop.ssh")


@dataclass(slots=True)
class ActiveSession:
    id: str
    user: str
    host: str
    mode: Mode
    source: str
    started: float
    close: Callable[[], None]


@dataclass
class FrontContext:
    """What every connection shares: inventory, audit, CA, limits, live sessions."""

    inventory: Inventory
    audit: AuditStore
    user_ca: UserCA
    limiter: FailureLimiter
    connect_timeout_s: float = 10.0
    window: int = 8 * 1024 * 1024
    max_packet: int = 256 * 1024
    sessions: dict[str, ActiveSession] = field(default_factory=dict)
    connections: set[Any] = field(default_factory=set)  # FrontServer instances
    pool: UpstreamPool | None = None
    recordings_dir: Path = Path("recordings")
    record_input: bool = False
    audit_start_timeout_s: float = 10.0
    session_store: SessionStore | None = None
    live: LiveState | None = None
    inner_options: Any = None  # asyncssh.SSHServerConnectionOptions for recorded jumps
    host_certificate: Callable[[str], tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]] | None = None
    env_stage: StagePolicy = field(default_factory=StagePolicy)
    passthrough_holds: PassthroughHolds = field(default_factory=PassthroughHolds)
    _pending: set[asyncio.Task[Any]] = field(default_factory=set)

    def audit_soon(self, kind: str, actor: str, data: Mapping[str, object]) -> None:
        """Append an audit event from a synchronous callback; ``flush`` awaits it."""
        task = asyncio.get_running_loop().create_task(self._append(kind, actor, data))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _append(self, kind: str, actor: str, data: Mapping[str, object]) -> None:
        try:
            await self.audit.append(kind, actor, data)
        except Exception as exc:  # the relay must outlive a storage hiccup; the error is logged
            log.error("audit write failed", kind=kind, error=str(exc))

    async def start_session(self, user: str, data: Mapping[str, object]) -> None:
        """Audit a session's start (raises if that fails: the caller fails closed),
        then add it to the session records the API serves."""
        await append_within(self.audit, "session.start", user, data, self.audit_start_timeout_s)
        if self.session_store is not None:
            try:
                await self.session_store.record_start(
                    session_id=str(data["session_id"]),
                    user=user,
                    host=str(data["host"]),
                    region=str(data.get("region", "")),
                    mode=Mode(str(data["mode"])),
                    account=str(data.get("account", "")),
                    source=str(data.get("source", "")),
                    gpus=int(data.get("gpus", 0) or 0),  # type: ignore[call-overload]
                )
            except Exception as exc:  # the audit log is the source of truth
                log.error("session record failed", error=str(exc))

    def end_session(self, user: str, data: Mapping[str, object]) -> None:
        """Audit a session's end and close its record, without blocking the caller."""
        self.audit_soon("session.end", user, data)
        if self.session_store is not None:
            task = asyncio.get_running_loop().create_task(self._record_end(data))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _record_end(self, data: Mapping[str, object]) -> None:
        assert self.session_store is not None
        status = data.get("exit_status")
        cost = data.get("cost_usd")
        try:
            await self.session_store.record_end(
                str(data["session_id"]),
                bytes_up=int(data.get("bytes_up", 0) or 0),  # type: ignore[call-overload]
                bytes_down=int(data.get("bytes_down", 0) or 0),  # type: ignore[call-overload]
                exit_status=status if isinstance(status, int) else None,
                error=str(data.get("error") or "") or None,
                cost_usd=cost if isinstance(cost, int | float) else None,
            )
        except Exception as exc:
            log.error("session record failed", error=str(exc))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run background work that ``flush`` waits for at shutdown."""
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait for background audit writes, at most ``timeout_s`` (storage may be down)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._pending:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                log.error("audit writes still pending at shutdown", count=len(self._pending))
                return
            await asyncio.wait(list(self._pending), timeout=left)
