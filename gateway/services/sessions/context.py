"""What every connection to the gateway shares: inventory, audit, CA, limits, live sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from gateway.adapters.asciicast.recording import Limits as RecordingLimits
from gateway.adapters.keys import UserCA
from gateway.domain.audit.coalesce import AuditCoalescer
from gateway.domain.inventory.hosts import Inventory
from gateway.domain.models import Mode, Principal
from gateway.domain.ratelimit import FailureLimiter
from gateway.domain.sessionevents import SessionEnd, SessionStart
from gateway.ports import AuditStore, append_within
from gateway.services.envstage import StagePolicy
from gateway.services.runtime import RuntimeRef
from gateway.services.sessions.authority import recheck
from gateway.services.sessions.limits import StartupLimiter
from gateway.services.sessions.passadmit import PassthroughHolds

if TYPE_CHECKING:
    import asyncssh

    from gateway.adapters.hosts.upstream import UpstreamPool
    from gateway.adapters.storage.sessions import SessionStore
    from gateway.services.live import LiveState

log = structlog.get_logger("gpuhop.ssh")

JUMP_PREFIX = "j"  # recorded jump ids: "j" + 15 hex digits; session ids are 16 hex digits


class Authority(Protocol):
    """Who a connection is *now*: the one question every channel, hop and sweep asks.

    Answered from the directory the gateway holds at the moment of asking (the one
    reference it swaps on reload or admin change), never from a copy taken at login.
    """

    def current_principal(self) -> tuple[Principal | None, str]:
        """The principal as the directory says now, or None and why it may not go on."""
        ...


@dataclass(slots=True)
class ActiveSession:
    """A live session or jump in this process: what the kill API and revocation reach.

    ``authority`` is the front connection it runs under; ``account``, ``gpus`` and
    ``mode`` are what policy allowed, checked again whenever the directory changes.
    ``revoke`` ends it with one line to the user saying why (``close`` without one).
    """

    id: str
    user: str
    host: str
    mode: Mode
    source: str
    started: float
    close: Callable[[], None]
    account: str = ""
    gpus: int = 0
    authority: Authority | None = None
    revoke: Callable[[str], None] | None = None
    jump: str = ""  # the recorded jump this session runs inside, if any


@dataclass
class FrontContext:
    """What every connection shares: the runtime, audit, limits, live sessions.

    The directory and keys are read from ``runtime`` at each use (``inventory``,
    ``user_ca``, ``host_certificate``), never kept: see :mod:`gateway.services.runtime`.
    """

    runtime: RuntimeRef
    audit: AuditStore
    limiter: FailureLimiter
    pool: UpstreamPool  # the gateway's own connections to hosts, shared by sessions
    session_store: SessionStore  # the session records the API serves
    live: LiveState  # probes, meters, leases, data sets
    connect_timeout_s: float = 10.0
    window: int = 8 * 1024 * 1024
    max_packet: int = 256 * 1024
    sessions: dict[str, ActiveSession] = field(default_factory=dict)
    connections: set[Any] = field(default_factory=set)  # FrontServer instances
    jumps: dict[str, ActiveSession] = field(default_factory=dict)  # recorded ssh -J hops
    generation: int = 0  # bumped on every directory swap; see ``register``
    recordings_dir: Path = Path("recordings")
    record_input: bool = False
    recording_limits: RecordingLimits = field(default_factory=RecordingLimits)
    audit_start_timeout_s: float = 10.0
    max_forwards_per_session: int = 64  # forwards and -R listeners open at once, per jump
    inner_options: Any = None  # asyncssh.SSHServerConnectionOptions for recorded jumps
    env_stage: StagePolicy = field(default_factory=StagePolicy)
    startups: StartupLimiter = field(default_factory=lambda: StartupLimiter(256, 64))
    max_channels: int = 64  # per connection
    max_env: int = 64  # per session channel
    max_resizes_per_s: int = 20  # per channel
    coalescer: AuditCoalescer = field(default_factory=lambda: AuditCoalescer(20))
    passthrough_holds: PassthroughHolds = field(default_factory=PassthroughHolds)
    _pending: set[asyncio.Task[Any]] = field(default_factory=set)
    _summary_timer: asyncio.TimerHandle | None = None

    @property
    def inventory(self) -> Inventory:
        return self.runtime.current.inventory

    @property
    def user_ca(self) -> UserCA:
        return self.runtime.current.keys.user_ca

    def host_certificate(self, name: str) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
        """The host certificate the inner server presents for inventory host ``name``."""
        return self.runtime.current.keys.host_certificates(name)

    def register(self, session: ActiveSession, generation: int) -> None:
        """Add a live session decided under directory ``generation`` to the registry.

        A directory swap that happened while the session was being opened (after
        policy said yes, before it was registered) swept past it: check it now.
        """
        registry = self.jumps if session.id.startswith(JUMP_PREFIX) else self.sessions
        registry[session.id] = session
        if generation != self.generation:
            recheck(self, session)

    def audit_soon(
        self,
        kind: str,
        actor: str,
        data: Mapping[str, object],
        *,
        scope: str = "",
        key: str = "",
        window_s: float = 1.0,
    ) -> None:
        """Append an audit event from a synchronous callback; ``flush`` awaits it.

        With a ``scope`` (the connection's source, for refusals) the event is
        coalesced: see :mod:`gateway.domain.audit.coalesce`. ``key`` says which events
        are repeats of each other (default: the ``reason``)."""
        if scope:
            key = key or str(data.get("reason", ""))
            if not self.coalescer.offer(scope, kind, key, actor, data, window_s):
                self._schedule_summaries()
                return
        task = asyncio.get_running_loop().create_task(self._append(kind, actor, data))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def audit_scope_closed(self, scope: str) -> None:
        """A connection ended: write its coalesced summaries now."""
        for s in self.coalescer.close(scope):
            self.audit_soon(s.kind, s.actor, s.data)

    def _schedule_summaries(self) -> None:
        if self._summary_timer is not None:
            return
        at = self.coalescer.next_due()
        if at is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, at - self.coalescer.clock())
        self._summary_timer = loop.call_later(delay, self._write_summaries)

    def _write_summaries(self) -> None:
        self._summary_timer = None
        for s in self.coalescer.due():
            self.audit_soon(s.kind, s.actor, s.data)
        self._schedule_summaries()

    async def _append(self, kind: str, actor: str, data: Mapping[str, object]) -> None:
        try:
            await self.audit.append(kind, actor, data)
        except Exception as exc:  # the relay must outlive a storage hiccup; the error is logged
            log.error("audit write failed", kind=kind, error=str(exc))

    async def start_session(self, start: SessionStart) -> None:
        """Audit a session's start (raises if that fails: the caller fails closed),
        then add it to the session records the API serves."""
        await append_within(
            self.audit, start.event, start.user, start.audit_data(), self.audit_start_timeout_s
        )
        try:
            await self.session_store.record_start(
                session_id=start.session_id,
                user=start.user,
                host=start.host,
                region=start.region,
                mode=start.mode,
                account=start.account,
                source=start.source,
                gpus=start.gpus,
            )
        except Exception as exc:  # the audit log is the source of truth
            log.error("session record failed", error=str(exc))

    def end_session(self, end: SessionEnd) -> None:
        """Audit a session's end and close its record, without blocking the caller."""
        self.audit_soon(end.event, end.user, end.audit_data())
        self.spawn(self._record_end(end))

    async def _record_end(self, end: SessionEnd) -> None:
        try:
            await self.session_store.record_end(
                end.session_id,
                bytes_up=end.bytes_up,
                bytes_down=end.bytes_down,
                exit_status=end.exit_status,
                error=end.error or None,
                cost_usd=end.cost_usd,
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
        if self._summary_timer is not None:
            self._summary_timer.cancel()
            self._summary_timer = None
        for summary in self.coalescer.due():
            self.audit_soon(summary.kind, summary.actor, summary.data)
        for scope in self.coalescer.scopes():
            self.audit_scope_closed(scope)
        while self._pending:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                log.error("audit writes still pending at shutdown", count=len(self._pending))
                return
            await asyncio.wait(list(self._pending), timeout=left)
