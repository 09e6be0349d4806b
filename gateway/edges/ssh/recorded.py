"""Recorded sessions: the gateway terminates the user's channel and re-originates it.

A :class:`RecordedSession` is the user's side of one session channel (shell,
exec or the ``sftp`` subsystem). It opens the same kind of channel on the
gateway's own connection to the host (:mod:`gateway.adapters.hosts.upstream`) and relays
both ways: data and stderr kept apart, window changes, signals, breaks, EOF,
and the exact exit status or signal. Terminal channels are recorded as
asciicast v2; SFTP is audited per operation instead. Flow control is
end to end: a full window on one side pauses reading on the other.

A recording that cannot be created refuses the session: never unrecorded. Output
is recorded before it is forwarded; when the recording cannot go on (write error,
size cap, free-space reserve) the data is dropped and the session ends.

``ssh -A``: a session whose user asked for the agent relays it when a role that
grants the session allows agent forwarding (``session.agent``, durable before the
relay opens), over a connection to the host of its own and a socket of its own
(:mod:`gateway.edges.ssh.agentrelay`), both closed with the session. Otherwise the
refusal is audited and the user's stderr says why, once, as the session starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import asyncssh
import structlog

from gateway.adapters.asciicast.recording import Recording, RecordingError, check_free
from gateway.adapters.sshcompat import hand_over
from gateway.domain.inventory.leases import Lease, LeaseRefused, host_environment
from gateway.domain.models import AccessRequest, Host, Mode, Principal
from gateway.domain.policy.forwards import (
    ForwardKind,
    ForwardRequest,
    decide_forward,
    ssh_ports_of,
)
from gateway.domain.policy.rules import evaluate
from gateway.domain.sessionevents import SessionEnd, SessionStart
from gateway.edges.ssh.agentrelay import AgentRelay
from gateway.edges.ssh.sftpaudit import SftpAuditor
from gateway.errors import GatewayError, StorageError
from gateway.ports import append_within
from gateway.services.live import IdleWatch
from gateway.services.sessions.context import ActiveSession, Authority, FrontContext
from gateway.services.sessions.limits import ResizeThrottle

log = structlog.get_logger("gpuhop.recorded")

STDERR = asyncssh.EXTENDED_DATA_STDERR
SPACE_CHECK_S = 2.0  # how often an idle recorded session reads the free space
NO_AGENT_HERE = "agent forwarding is not relayed for sessions on the gateway"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a recorded session goes, once policy has allowed it."""

    principal: Principal
    host: Host
    account: str
    role: str
    via: str  # "jump" (ssh -J) or "direct" (ssh user+host@gateway)
    authority: Authority | None = None  # the front connection, asked again on directory changes
    generation: int = 0  # the directory generation the decision was made under
    jump: str = ""  # the recorded jump's id when via == "jump"


class _UpstreamSide(asyncssh.SSHClientSession[bytes]):
    """The host's side of the relay."""

    def __init__(self, owner: RecordedSession) -> None:
        self._owner = owner

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._owner.from_host(data, datatype)

    def eof_received(self) -> bool:
        self._owner.host_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self._owner.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self._owner.exit_signal = (signal, core_dumped, msg, lang)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.host_closed(exc)

    def pause_writing(self) -> None:
        self._owner.pause_user()

    def resume_writing(self) -> None:
        self._owner.resume_user()


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a session channel on the gateway itself turns out to be."""

    target: Target | None = None
    command: str | None = None  # the command to run on the host (None: a shell)
    message: str = ""  # shown when there is no target (a menu or a refusal)
    exit_status: int = 0
    service: asyncssh.SSHServerSession[bytes] | None = None  # the gateway answers itself
    principal: Principal | None = None  # who asked, when known (to audit a refused ssh -A)


Resolver = Callable[[str | None], Awaitable[Resolution]]


class RecordedSession(asyncssh.SSHServerSession[bytes]):
    """The user's side of one recorded session channel.

    ``target`` is known up front for ``ssh -J`` and ``user+host@gateway``; for
    ``ssh gateway HOST [CMD]`` a ``resolver`` decides once the command is known.
    """

    def __init__(
        self, ctx: FrontContext, target: Target | None, resolver: Resolver | None = None
    ) -> None:
        self._ctx = ctx
        self._t: Target | None = target  # set by the resolver when one is given
        self._resolver = resolver
        self.session_id = uuid.uuid4().hex[:16]
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._up: asyncssh.SSHClientChannel[bytes] | None = None
        self._entry: object | None = None
        self._command: str | None = None
        self._subsystem: str | None = None
        self._term: tuple[str, tuple[int, int, int, int], dict[int, int]] | None = None
        self._recording: Recording | None = None
        self._sftp: SftpAuditor | None = None
        self.exit_status: int | None = None
        self.exit_signal: tuple[str, bool, str, str] | None = None
        self._bytes_up = 0
        self._bytes_down = 0
        self._started = time.monotonic()
        self._error = ""
        self._finished = False
        self._task: asyncio.Task[None] | None = None
        self._service: asyncssh.SSHServerSession[bytes] | None = None
        self._early: list[tuple[bytes, asyncssh.DataType]] = []
        self._early_eof = False
        self._host_full = False  # the host's channel buffer is past its limit: user paused
        self._gpus = 0
        self._lease: Lease | None = None
        self._notice = ""
        self._metered = False
        self._last_activity = time.monotonic()
        self._space_timer: asyncio.TimerHandle | None = None
        self._resizes = ResizeThrottle(self._resize, ctx.max_resizes_per_s)
        self._agent_wanted = False  # the user asked for ssh -A on this channel
        self._agent: AgentRelay | None = None

    @property
    def target(self) -> Target:
        assert self._t is not None, "resolved before use"
        return self._t

    # -- requests from the user --

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        self._term = (term_type, term_size, dict(term_modes))
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self._command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self._subsystem = subsystem
        return True

    def agent_requested(self) -> None:
        """``ssh -A`` on this channel: decided in :meth:`_open`, once the host is known."""
        self._agent_wanted = True

    def session_started(self) -> None:
        assert self._chan is not None
        self._chan.pause_reading()  # until the host's channel is open
        self._task = asyncio.get_running_loop().create_task(self._open())

    # -- opening the host side --

    def _what(self) -> str:
        if self._subsystem:
            return "sftp"
        return "exec" if self._command is not None else "shell"

    def _start_event(self) -> SessionStart:
        p = self.target.principal
        details: dict[str, object] = {
            "via": self.target.via,
            "fingerprint": p.key_fingerprint,
            "cert_id": p.cert_id,
            "role": self.target.role,
            "request": self._what(),
            "command": self._command,
            "pty": self._term is not None,
        }
        if self.target.jump:
            details["jump_id"] = self.target.jump
        if self._recording is not None:
            details["recording"] = self._recording.path.name
        return SessionStart(
            self.session_id,
            p.user,
            self.target.host.name,
            self.target.host.region,
            Mode.RECORDED,
            source=p.source,
            account=self.target.account,
            gpus=self._gpus,
            details=details,
        )

    async def _open(self) -> None:
        chan = self._chan
        assert chan is not None
        ctx = self._ctx
        if self._resolver is not None:
            res = await self._resolver(self._command)
            if self._agent_wanted and res.target is None:  # a menu, a refusal or a service
                self._refuse_agent(NO_AGENT_HERE, res.principal, tell=res.service is None)
            if res.service is not None:
                self._hand_over(res.service)
                return
            if res.target is None:
                with contextlib.suppress(OSError):
                    out = res.message.replace("\n", "\r\n").encode()
                    chan.write(out, STDERR if res.exit_status else None)
                    chan.exit(res.exit_status)
                self._finished = True  # nothing was started, nothing to record
                return
            self._t = res.target
            self._command = res.command
        denial = self._recordings_full() or await self._admit(chan.get_environment())
        if denial:
            await self._audit(
                "channel.deny",
                {
                    "source": self.target.principal.source,
                    "request": self._what(),
                    "account": self.target.account,
                    "reason": denial,
                },
            )
            self._refuse(f"gpuhop: denied: {denial}", denial, audit_end=False)
            return
        try:
            if self._subsystem is None:
                self._recording = self._start_recording()
            else:
                self._sftp = SftpAuditor(self._sftp_event)
            await ctx.start_session(self._start_event())
        except RecordingError as exc:
            self._refuse(f"gpuhop: session refused: {exc}", str(exc))
            return
        except (StorageError, OSError) as exc:
            self._refuse(f"gpuhop: session refused: {exc}", "recording or audit unavailable")
            return
        ctx.register(
            ActiveSession(
                self.session_id,
                self.target.principal.user,
                self.target.host.name,
                Mode.RECORDED,
                self.target.principal.source,
                time.time(),
                self.kill,
                account=self.target.account,
                gpus=self._gpus,
                authority=self.target.authority,
                revoke=self.revoke,
                jump=self.target.jump,
            ),
            self.target.generation,
        )
        if self._chan is None or self._error:
            return  # revoked as it registered
        if self._agent_wanted:
            await self._relay_agent(chan)
            if self._finished:
                return
        try:
            if self._agent is not None:  # never a shared connection: see upstream.py
                entry = await ctx.pool.acquire_private(
                    self.target.principal.user,
                    self.target.host,
                    self.target.account,
                    agent_path=str(self._agent.path),
                )
            else:
                entry = await ctx.pool.acquire(
                    self.target.principal.user, self.target.host, self.target.account
                )
        except GatewayError as exc:
            self._error = str(exc)
            await self._audit("upstream.fail", {"reason": str(exc)})
            self._refuse(f"gpuhop: {exc}", str(exc))
            return
        self._entry = entry
        term = self._term
        env: dict[bytes | str, bytes | str] = {}
        env.update(host_environment(chan.get_environment(), self._lease))  # the gateway's GPUs
        try:
            up, _ = await entry.conn.create_session(
                lambda: _UpstreamSide(self),
                self._command,
                subsystem=self._subsystem or (),
                env=env or (),
                request_pty=term is not None,
                term_type=term[0] if term else (),
                term_size=term[1] if term else (),
                term_modes=term[2] if term else (),
                encoding=None,
                window=entry.window,
                max_pktsize=ctx.max_packet,
            )
        except (asyncssh.Error, OSError) as exc:
            reason = getattr(exc, "reason", "") or str(exc)
            self._error = f"{self.target.host.name}: {reason}"
            self._refuse(f"gpuhop: {self._error}", self._error)
            return
        self._up = up
        if self._notice:
            with contextlib.suppress(OSError):
                chan.write((self._notice + "\r\n").encode(), STDERR)
        for data, datatype in self._early:
            up.write(data, datatype)
        self._early.clear()
        if self._early_eof:
            up.write_eof()
        if self._recording is not None:
            self._space_timer = asyncio.get_running_loop().call_later(
                SPACE_CHECK_S, self._watch_space
            )
        if not self._host_full:  # a host that is already full resumes the user itself
            chan.resume_reading()

    async def _relay_agent(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        """``ssh -A``: open this session's agent relay when policy allows, else say why."""
        t = self.target
        ports = ssh_ports_of(t.host, tuple(self._ctx.inventory.hosts))
        request = ForwardRequest(ForwardKind.AGENT, t.host, ssh_ports=ports)
        decision = decide_forward(t.principal, t.account, request)
        if not decision.allowed:
            self._refuse_agent(decision.reason, t.principal)
            return
        try:
            relay = await AgentRelay.open(chan.get_connection())
        except OSError as exc:
            self._refuse_agent(f"agent socket unavailable: {exc.strerror or exc}", t.principal)
            return
        data: dict[str, object] = {
            "session_id": self.session_id,
            "user": t.principal.user,
            "source": t.principal.source,
            "host": t.host.name,
            "account": t.account,
            "role": decision.role,
            "via": t.via,
            "socket": str(relay.path),
        }
        if t.jump:
            data["jump_id"] = t.jump
        try:  # durable before the host can reach the agent: fail closed
            timeout = self._ctx.audit_start_timeout_s
            await append_within(self._ctx.audit, "session.agent", t.principal.user, data, timeout)
        except Exception as exc:
            relay.close()
            log.error("audit write failed; not relaying the agent", error=str(exc))
            self._tell("agent forwarding refused: audit log unavailable")
            return
        if self._finished:
            relay.close()
            return
        self._agent = relay

    def _refuse_agent(self, reason: str, principal: Principal | None, tell: bool = True) -> None:
        """Audit a refused ``ssh -A`` with its reason and tell the user (OpenSSH shows nothing)."""
        if principal is not None:
            data: dict[str, object] = {
                "user": principal.user,
                "source": principal.source,
                "request": ForwardKind.AGENT.value,
                "dest": "",
                "reason": reason,
            }
            if self._t is not None:
                data.update(
                    session_id=self.session_id, host=self._t.host.name, account=self._t.account
                )
            self._ctx.audit_soon("channel.deny", principal.user, data, scope=principal.source)
        log.info("agent forwarding refused", reason=reason)
        if tell:
            self._tell(f"agent forwarding refused: {reason}")

    def _tell(self, message: str) -> None:
        if self._chan is not None:
            with contextlib.suppress(OSError):
                self._chan.write(f"gpuhop: {message}\r\n".encode(), STDERR)

    def _hand_over(self, service: asyncssh.SSHServerSession[bytes]) -> None:
        """Let a service on the gateway itself answer this channel; it audits its own work."""
        assert self._chan is not None
        self._service = service
        self._finished = True  # no host session: nothing to record, release or end
        hand_over(service, self._chan, self._early, self._early_eof)
        self._early.clear()

    async def _admit(self, env: Mapping[str, str]) -> str:
        """Residency, GPU limits, budgets and GPU leases; returns why not, or ""."""
        live = self._ctx.live
        t = self.target
        try:
            gpus = int(env.get("GPUHOP_GPUS", "0") or 0)
        except ValueError:
            return "GPUHOP_GPUS must be a whole number"
        if gpus < 0:
            return "GPUHOP_GPUS must not be negative"
        self._gpus = gpus
        data = env.get("GPUHOP_DATA") or None
        if data:
            residency = live.residency(data, t.host)
            if not residency.allowed:
                return residency.reason
        if gpus:
            decision = evaluate(
                t.principal, AccessRequest(t.host, Mode.RECORDED, account=t.account, gpus=gpus)
            )
            if not decision.allowed:
                return decision.reason
        budget = await live.budget(t.principal.user, t.principal.team)
        if not budget.allowed:
            return budget.reason
        if budget.warning:
            self._notice = f"gpuhop: {budget.notice}"
        if gpus:
            lease = await live.lease(t.host, self.session_id, gpus)
            if isinstance(lease, LeaseRefused):
                return lease.reason
            self._lease = lease
            live.idle[self.session_id] = IdleWatch(
                self.session_id,
                t.host.name,
                lease.gpus,
                lambda: self._last_activity,
                self._idle_warn,
                self._idle_end,
            )
        live.start_meter(self.session_id, t.principal.user, t.principal.team, t.host, gpus)
        self._metered = True
        return ""

    def _start_recording(self) -> Recording:
        term = self._term
        width, height = (term[1][0], term[1][1]) if term else (80, 24)
        p = self.target.principal
        title = f"{p.user} -> {self.target.account}@{self.target.host.name}"
        return Recording(
            self._ctx.recordings_dir / f"{self.session_id}.cast",
            width=width or 80,
            height=height or 24,
            term=term[0] if term else "",
            title=title,
            command=self._command,
            record_input=self._ctx.record_input,
            limits=self._ctx.recording_limits,
        )

    def _recordings_full(self) -> str:
        """Why a terminal session cannot be recorded now (free-space reserve), or ""."""
        if self._subsystem is not None:
            return ""
        try:
            check_free(self._ctx.recordings_dir, self._ctx.recording_limits.min_free_bytes)
        except RecordingError as exc:
            return f"recording unavailable: {exc}"
        return ""

    def _watch_space(self) -> None:
        """Read the recordings filesystem's free space now and then, so idle sessions end too."""
        self._space_timer = None
        if self._recording is None or self._finished:
            return
        try:
            self._recording.check_space()
        except RecordingError as exc:
            self._recording_stopped(exc)
            return
        loop = asyncio.get_running_loop()
        self._space_timer = loop.call_later(SPACE_CHECK_S, self._watch_space)

    def _recording_stopped(self, exc: RecordingError) -> None:
        """End the session: it can no longer be recorded (audited as its end's error)."""
        if self._finished or self._error.startswith("recording stopped"):
            return
        self._error = f"recording stopped: {exc}"
        chan = self._chan
        if chan is not None:
            with contextlib.suppress(OSError):
                chan.write(f"\r\ngpuhop: session ended: {self._error}\r\n".encode(), STDERR)
                chan.exit(255)
        if self._up is not None:
            self._up.close()
        self._finish()

    def _refuse(self, message: str, error: str, audit_end: bool = True) -> None:
        self._error = self._error or error
        if not audit_end:
            self._finished = True  # nothing started: no session.end, nothing to release
        chan = self._chan
        if chan is not None:
            with contextlib.suppress(OSError):
                chan.write((message + "\r\n").encode(), STDERR)
                chan.exit(255)
        self._finish()

    # -- data paths --

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._service is not None:
            self._service.data_received(data, datatype)
            return
        self._bytes_up += len(data)
        self._last_activity = time.monotonic()
        if self._recording is not None:
            try:
                self._recording.input(data)
            except RecordingError as exc:
                self._recording_stopped(exc)
                return
        elif self._sftp is not None:
            self._sftp.client_data(data)
        if self._up is not None:
            self._up.write(data, datatype)
            return
        # asyncssh may deliver a request's first data before pause_reading takes
        # effect. Pausing again here keeps what waits for the host within one
        # channel window: asyncssh grants no more while paused and refuses a
        # client that sends past its window.
        if self._chan is not None:
            self._chan.pause_reading()
        self._early.append((data, datatype))

    def from_host(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._bytes_down += len(data)
        self._last_activity = time.monotonic()
        if self._metered:
            self._ctx.live.add_egress(self.session_id, len(data))
        if self._recording is not None:
            try:
                self._recording.output(data)  # before forwarding: nothing unrecorded is seen
            except RecordingError as exc:
                self._recording_stopped(exc)
                return
        elif self._sftp is not None and datatype is None:
            self._sftp.server_data(data)
        if self._chan is not None:
            with contextlib.suppress(BrokenPipeError):
                self._chan.write(data, datatype)

    def eof_received(self) -> bool:
        if self._service is not None:
            return self._service.eof_received()
        if self._up is not None:
            self._up.write_eof()
        else:
            self._early_eof = True
        return True

    def host_eof(self) -> None:
        if self._chan is not None:
            with contextlib.suppress(BrokenPipeError):
                self._chan.write_eof()

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._resizes.offer(width, height, pixwidth, pixheight)  # bounded per second

    def _resize(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self._recording is not None:
            try:
                self._recording.resize(width, height)
            except RecordingError as exc:
                self._recording_stopped(exc)
                return
        if self._up is not None:
            self._up.change_terminal_size(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self._up is not None:
            self._up.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self._up is not None:
            self._up.send_break(msec)
            return True
        return False

    # flow control: each side's full window pauses reading on the other
    def pause_writing(self) -> None:
        if self._service is not None:
            self._service.pause_writing()
        if self._up is not None:
            self._up.pause_reading()

    def resume_writing(self) -> None:
        if self._service is not None:
            self._service.resume_writing()
        if self._up is not None:
            self._up.resume_reading()

    def pause_user(self) -> None:
        self._host_full = True
        if self._chan is not None:
            self._chan.pause_reading()

    def resume_user(self) -> None:
        self._host_full = False
        if self._chan is not None and self._up is not None:
            self._chan.resume_reading()

    # -- endings --

    def host_closed(self, exc: Exception | None) -> None:
        chan = self._chan
        if chan is not None:
            with contextlib.suppress(OSError):
                if self.exit_signal is not None:
                    sig, core, msg, lang = self.exit_signal
                    chan.exit_with_signal(sig, core, msg, lang)
                elif self.exit_status is not None:
                    chan.exit(self.exit_status)
                else:
                    self._error = self._error or (
                        f"connection to {self.target.host.name} lost" + (f": {exc}" if exc else "")
                    )
                    chan.write(f"\r\ngpuhop: {self._error}\r\n".encode(), STDERR)
                    chan.exit(255)
        self._finish()

    def connection_lost(self, exc: Exception | None) -> None:
        self._resizes.close()
        if self._service is not None:
            self._service.connection_lost(exc)
        if self._up is not None:
            self._up.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._t is not None:
            self._finish()

    def _idle_warn(self, message: str) -> None:
        self._ctx.spawn(self._audit("session.idle_warn", {"message": message}))
        if self._chan is not None:
            with contextlib.suppress(OSError):
                self._chan.write(f"\r\ngpuhop: warning: {message}\r\n".encode(), STDERR)

    def _idle_end(self, message: str) -> None:
        self._ctx.spawn(self._audit("session.idle_end", {"message": message}))
        if self._chan is not None:
            with contextlib.suppress(OSError):
                self._chan.write(f"\r\ngpuhop: {message}\r\n".encode(), STDERR)
        self._error = message
        self.kill()

    def revoke(self, message: str) -> None:
        """End the session because the directory no longer allows it, saying why."""
        self._error = message
        if self._chan is not None:
            with contextlib.suppress(OSError):
                self._chan.write(f"\r\ngpuhop: {message}\r\n".encode(), STDERR)
                self._chan.exit(255)
        self.kill()

    def kill(self) -> None:
        """End the session from the gateway side (admin kill, shutdown)."""
        self._error = self._error or "ended by the gateway"
        if self._up is not None:
            self._up.close()
        if self._chan is not None:
            self._chan.close()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        ctx = self._ctx
        ctx.sessions.pop(self.session_id, None)
        if self._entry is not None:
            ctx.pool.release(self._entry)  # type: ignore[arg-type]
        if self._agent is not None:
            self._agent.close()
        cost = None
        if self._metered:
            stopped = ctx.live.stop_meter(self.session_id)
            cost = None if stopped is None else round(stopped.total, 6)
        if self._lease is not None:
            ctx.live.idle.pop(self.session_id, None)
            ctx.spawn(ctx.live.release(self.session_id))
        if self._space_timer is not None:
            self._space_timer.cancel()
        details: dict[str, object] = {
            "exit_signal": self.exit_signal[0] if self.exit_signal else None
        }
        if self._recording is not None:
            self._recording.close()
            details["recording_bytes"] = self._recording.bytes_written
            if self._recording.failed:
                details["recording_error"] = self._recording.failed
        if self._sftp is not None:
            self._sftp.close()
        end = SessionEnd(
            self._start_event(),
            bytes_up=self._bytes_up,
            bytes_down=self._bytes_down,
            duration_s=time.monotonic() - self._started,
            exit_status=self.exit_status,
            error=self._error,
            cost_usd=cost,
            details=details,
        )
        ctx.end_session(end)

    async def _audit(self, kind: str, data: dict[str, object]) -> None:
        payload = {
            "session_id": self.session_id,
            "user": self.target.principal.user,
            "host": self.target.host.name,
            **data,
        }
        with contextlib.suppress(Exception):
            await self._ctx.audit.append(kind, self.target.principal.user, payload)

    def _sftp_event(self, kind: str, data: dict[str, object]) -> None:
        payload = {
            "session_id": self.session_id,
            "user": self.target.principal.user,
            "host": self.target.host.name,
            "account": self.target.account,
            **data,
        }
        self._ctx.audit_soon(kind, self.target.principal.user, payload)
