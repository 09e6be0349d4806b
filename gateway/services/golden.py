"""The golden test: a short probe job on each placement candidate, measured.

Ranking predicts cost and latency from prices and probes; before a long job
is committed, the golden test runs one short command on the best few hosts at
once and reports what it actually took there: wall time, the round trip on
the connection it ran over, exit status, the cost of that time at the host's
price, and the last lines of output.

Each host's run is a session like an exec over SSH, by construction: it is
policy-checked (recorded mode, the account their role grants, their budget),
its GPUs are leased for the duration and are the only ones it sees
(``host_environment``), it is audited ``session.start``/``session.end`` and
stored as a session record with its cost (so it counts against budgets), it
is metered while it runs, its output is recorded as asciicast v2 like an
exec's, and it is listed among the live sessions, where the kill API ends it.
Every run also writes ``placement.golden`` per host. A recording or start
event that cannot be written refuses the run (fail closed).

Caps, per user (``golden_*`` settings): how many host runs at once, and how
long one may take. A CI token may start them only with a role that says
``ci_golden = true`` (its other roles do not count). Output is kept as it comes:
the recording on disk, and only the last ``KEEP_OUTPUT`` bytes of each stream
in memory. Hosts that fail, time out or refuse are reported beside the others,
never fatal to the rest; a command that outlives its time or is killed is
killed there, not left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol

import asyncssh
import structlog

from gateway.adapters.asciicast.recording import Recording
from gateway.adapters.hosts.probes import ssh_rtt_ms
from gateway.domain.inventory.leases import Lease, LeaseRefused, host_environment
from gateway.domain.metering.budgets import BudgetDecision
from gateway.domain.metering.meter import Cost, Rate
from gateway.domain.models import AccessRequest, Host, Mode, Principal
from gateway.domain.policy.rules import evaluate
from gateway.domain.sessionevents import SessionEnd, SessionStart
from gateway.errors import GatewayError, PolicyDenied
from gateway.services.envprotocol import as_bytes
from gateway.services.sessions.context import ActiveSession

if TYPE_CHECKING:
    from gateway.services.sessions.context import FrontContext

log = structlog.get_logger("gpuhop.golden")

MAX_OUTPUT_LINES = 8
MAX_LINE = 200
KEEP_OUTPUT = 16 * 1024  # per stream, in memory: the report shows the last lines only
READ_SIZE = 64 * 1024
GROUP_MARK = "gpuhop-golden-group="
KILL_TIMEOUT_S = 5.0
RTT_AFTER_S = 5.0  # the round trip after the run: bounded, and optional
DRAIN_S = 5.0  # output still arriving after the exit status

Status = Literal["ok", "failed", "denied", "no_gpus", "timeout", "unreachable", "killed"]


class GoldenLimit(PolicyDenied):
    """A golden request past a per-user cap; ``status`` is the HTTP status to answer."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class GoldenLimits:
    """Per-user caps (``[gateway] golden_*`` settings)."""

    max_running: int = 8
    """Host runs one user may have going at once (one request runs on up to 8 hosts)."""
    max_seconds: float = 600.0
    """The longest ``timeout_s`` a request may ask for."""


@dataclass(frozen=True, slots=True)
class GoldenResult:
    """One host's run of the golden command."""

    host: str
    status: Status
    exit_status: int | None = None
    seconds: float = 0.0
    rtt_ms: float | None = None
    """An SSH round trip on the connection the command ran over: the smaller of one
    just before it and one just after (a fresh connection's first can wait on its login)."""
    cost: float = 0.0
    currency: str = "USD"
    gpus: tuple[int, ...] = ()
    output: tuple[str, ...] = ()
    error: str = ""
    session_id: str = ""
    """The session record (and recording) of the run; empty when it never started."""


class Leases(Protocol):
    """What it needs from ``gateway.services.live.LiveState``."""

    async def lease(self, host: Host, session_id: str, gpus: int) -> Lease | LeaseRefused: ...

    async def release(self, session_id: str) -> None: ...

    def rate(self, host: Host) -> Rate: ...

    async def budget(self, user: str, team: str) -> BudgetDecision: ...

    def start_meter(self, session_id: str, user: str, team: str, host: Host, gpus: int) -> None: ...

    def add_egress(self, session_id: str, nbytes: int) -> None: ...

    def stop_meter(self, session_id: str) -> Cost | None: ...


Audit = Callable[[str, str, dict[str, object]], Awaitable[None]]
AccountFor = Callable[[Principal, Host], str]


def golden_principal(principal: Principal, ci: bool) -> Principal:
    """Who a golden run acts as: a CI token keeps only its roles that allow golden runs."""
    if not ci:
        return principal
    return replace(principal, roles=tuple(r for r in principal.roles if r.ci_golden))


class _Output:
    """One stream of a run: recorded as it comes, its tail kept for the report."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.tail = bytearray()

    def add(self, data: bytes) -> None:
        self.run.seen(data)
        self.tail += data
        del self.tail[:-KEEP_OUTPUT]


class _Run:
    """The session side of one host's run: recording, meter, byte count, kill switch."""

    def __init__(self, ctx: FrontContext, leases: Leases, session_id: str, rec: Recording) -> None:
        self.ctx, self.leases, self.session_id, self.recording = ctx, leases, session_id, rec
        self.bytes_down = 0
        self.killed = asyncio.Event()

    def seen(self, data: bytes) -> None:
        self.bytes_down += len(data)
        self.recording.output(data)
        self.leases.add_egress(self.session_id, len(data))


class GoldenRunner:
    """Runs one command on several hosts at once; see the module docstring."""

    def __init__(
        self,
        ctx: FrontContext,
        leases: Leases,
        audit: Audit,
        account_for: AccountFor,
        default_command: str,
        limits: GoldenLimits | None = None,
    ) -> None:
        self._ctx, self._leases, self._audit = ctx, leases, audit
        self._account_for = account_for
        self.default_command = default_command
        self.limits = limits or GoldenLimits()
        self._running: dict[str, int] = {}

    async def run(
        self,
        principal: Principal,
        hosts: Sequence[Host],
        command: str,
        gpus: int,
        timeout_s: float,
    ) -> list[GoldenResult]:
        """Each host's result, in the order given; ``GoldenLimit`` past a cap (nothing ran)."""
        limits, user = self.limits, principal.user
        if timeout_s > limits.max_seconds:
            raise GoldenLimit(
                f"golden runs may take at most {limits.max_seconds:g} s; asked for {timeout_s:g}",
                422,
            )
        going = self._running.get(user, 0)
        if going + len(hosts) > limits.max_running:
            raise GoldenLimit(
                f"{user} has {going} golden run(s) going; at most {limits.max_running} at once"
                f" (this request would add {len(hosts)})",
                429,
            )
        self._running[user] = going + len(hosts)  # before the first await: no race
        try:
            return list(
                await asyncio.gather(
                    *(self._one(principal, h, command, gpus, timeout_s) for h in hosts)
                )
            )
        finally:
            left = self._running.get(user, 0) - len(hosts)
            if left > 0:
                self._running[user] = left
            else:
                self._running.pop(user, None)

    async def _one(
        self, principal: Principal, host: Host, command: str, gpus: int, timeout_s: float
    ) -> GoldenResult:
        account = self._account_for(principal, host)
        decision = evaluate(
            principal, AccessRequest(host, Mode.RECORDED, account=account, gpus=gpus)
        )
        rate = self._leases.rate(host)
        refused = "" if decision.allowed else decision.reason
        if not refused:
            budget = await self._leases.budget(principal.user, principal.team)
            refused = "" if budget.allowed else budget.reason
        if refused:
            result = GoldenResult(host.name, "denied", error=f"denied: {refused}")
            await self._record(principal, host, account, command, result)
            return result
        session_id = uuid.uuid4().hex[:16]
        lease: Lease | None = None
        if gpus > 0:
            got = await self._leases.lease(host, session_id, gpus)
            if isinstance(got, LeaseRefused):
                result = GoldenResult(host.name, "no_gpus", error=got.reason)
                await self._record(principal, host, account, command, result)
                return result
            lease = got
        try:
            result = await self._session(
                principal, host, account, decision.role, command, lease, gpus, timeout_s, session_id
            )
        finally:
            if lease is not None:
                await self._leases.release(session_id)
        result = replace(result, currency=rate.currency, gpus=lease.gpus if lease else ())
        await self._record(principal, host, account, command, result)
        return result

    async def _session(
        self,
        principal: Principal,
        host: Host,
        account: str,
        role: str,
        command: str,
        lease: Lease | None,
        gpus: int,
        timeout_s: float,
        session_id: str,
    ) -> GoldenResult:
        """The run as a session: started (fail closed), live, metered, recorded, ended."""
        ctx, user = self._ctx, principal.user
        details: dict[str, object] = {
            "via": "golden",
            "fingerprint": principal.key_fingerprint,
            "cert_id": principal.cert_id,
            "role": role,
            "request": "golden",
            "command": command,
            "pty": False,
        }
        recording: Recording | None = None
        try:
            recording = Recording(
                ctx.recordings_dir / f"{session_id}.cast",
                width=80,
                height=24,
                term="",
                title=f"{user} -> {account}@{host.name} (golden)",
                command=command,
            )
            start = SessionStart(
                session_id,
                user,
                host.name,
                host.region,
                Mode.RECORDED,
                source=principal.source,
                account=account,
                gpus=gpus,
                details={**details, "recording": recording.path.name},
            )
            await ctx.start_session(start)
        except Exception as exc:  # fail closed: never an unrecorded or unaudited run
            if recording is not None:
                recording.close()
            return GoldenResult(host.name, "denied", error=f"session refused: {exc}")
        run = _Run(ctx, self._leases, session_id, recording)
        ctx.sessions[session_id] = ActiveSession(
            session_id,
            user,
            host.name,
            Mode.RECORDED,
            principal.source,
            time.time(),
            run.killed.set,
        )
        self._leases.start_meter(session_id, user, principal.team, host, gpus)
        started = time.monotonic()
        try:
            result = await self._execute(principal, host, account, command, lease, timeout_s, run)
        finally:
            ctx.sessions.pop(session_id, None)
            cost = self._leases.stop_meter(session_id)
            recording.close()
        total = round(cost.total, 6) if cost is not None else 0.0
        result = replace(result, cost=total, session_id=session_id)
        end_details: dict[str, object] = {
            "recording_bytes": recording.bytes_written,
            "exit_signal": None,
        }
        if recording.failed:
            end_details["recording_error"] = recording.failed
        end = SessionEnd(
            start,
            bytes_down=run.bytes_down,
            duration_s=time.monotonic() - started,
            exit_status=result.exit_status,
            error=result.error if result.status != "ok" else "",
            cost_usd=total,
            details=end_details,
        )
        ctx.end_session(end)
        return result

    async def _execute(
        self,
        principal: Principal,
        host: Host,
        account: str,
        command: str,
        lease: Lease | None,
        timeout_s: float,
        run: _Run,
    ) -> GoldenResult:
        pool = self._ctx.pool
        try:
            entry = await pool.acquire(principal.user, host, account)
        except GatewayError as exc:
            return GoldenResult(host.name, "unreachable", error=str(exc))
        env = host_environment({}, lease)  # no lease: no GPU, not the host's default
        conn = entry.conn
        rtt_ms: float | None = None
        group: int | None = None
        out, err = _Output(run), _Output(run)
        try:
            rtt_ms = await asyncio.wait_for(ssh_rtt_ms(conn), timeout_s)
            started = time.monotonic()
            proc = await conn.create_process(_named(command), env=env, encoding=None)
            drains: list[asyncio.Task[None]] = []
            try:
                first = await asyncio.wait_for(proc.stderr.readline(), timeout_s)
                group, early = _group_of(first)
                if early:
                    err.add(early)
                drains = [
                    asyncio.ensure_future(_drain(proc.stdout, out)),
                    asyncio.ensure_future(_drain(proc.stderr, err)),
                ]
                left = max(0.0, timeout_s - (time.monotonic() - started))
                ended = asyncio.ensure_future(proc.wait_closed())
                killed = asyncio.ensure_future(run.killed.wait())
                try:
                    await asyncio.wait(
                        {ended, killed}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    killed.cancel()
                if not ended.done():
                    ended.cancel()
                    await _kill(conn, proc, group)
                    why: Status = "killed" if run.killed.is_set() else "timeout"
                    return GoldenResult(
                        host.name,
                        why,
                        seconds=time.monotonic() - started,
                        rtt_ms=round(rtt_ms, 3),
                        output=_lines(bytes(out.tail)) or _lines(bytes(err.tail)),
                        error="ended by the gateway (kill)"
                        if why == "killed"
                        else f"no exit after {timeout_s:g} s",
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*drains), DRAIN_S)
            except (asyncssh.TimeoutError, TimeoutError):
                await _kill(conn, proc, group)
                return GoldenResult(
                    host.name,
                    "timeout",
                    seconds=time.monotonic() - started,
                    rtt_ms=round(rtt_ms, 3),
                    error=f"no exit after {timeout_s:g} s",
                )
            finally:
                for task in drains:
                    task.cancel()
                proc.close()
            seconds = time.monotonic() - started
            # A second round trip, now that the connection is warm: a fresh one's first
            # answer can wait behind its login; the smaller of the two is the link's.
            with contextlib.suppress(TimeoutError, GatewayError):
                rtt_ms = min(rtt_ms, await asyncio.wait_for(ssh_rtt_ms(conn), RTT_AFTER_S))
        except TimeoutError:
            return GoldenResult(
                host.name, "unreachable", error=f"{host.name}: no answer in {timeout_s:g} s"
            )
        except (GatewayError, asyncssh.Error, OSError) as exc:
            reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
            return GoldenResult(host.name, "unreachable", error=f"{host.name}: {reason}")
        finally:
            pool.release(entry)
        status = proc.exit_status
        stdout, stderr = bytes(out.tail), bytes(err.tail)
        lines = _lines(stdout) or _lines(stderr)
        ended_how = f"exit status {status}"
        if proc.exit_signal is not None:
            ended_how = f"ended by signal {proc.exit_signal[0]}"
        error = "" if status == 0 else (_lines(stderr) or (ended_how,))[-1]
        return GoldenResult(
            host.name,
            "ok" if status == 0 else "failed",
            status,
            seconds,
            round(rtt_ms, 3),
            output=lines,
            error=error,
        )

    async def _record(
        self, principal: Principal, host: Host, account: str, command: str, r: GoldenResult
    ) -> None:
        data: dict[str, object] = {
            "user": principal.user,
            "source": principal.source,
            "host": host.name,
            "region": host.region,
            "account": account,
            "command": command,
            "result": r.status,
            "exit_status": r.exit_status,
            "duration_s": round(r.seconds, 6),
            "rtt_ms": r.rtt_ms,
            "gpus": list(r.gpus),
            "cost": r.cost,
            "error": r.error,
            "session_id": r.session_id or None,
        }
        try:
            await self._audit("placement.golden", principal.user, data)
        except Exception as exc:  # the result stands; the log says the record is missing
            log.error("audit write failed", kind="placement.golden", error=str(exc))


async def _drain(stream: asyncssh.SSHReader[bytes], sink: _Output) -> None:
    """Pass a stream to ``sink`` as it comes, until its end."""
    while True:
        data = await stream.read(READ_SIZE)
        if not data:
            return
        sink.add(as_bytes(data))


def _named(command: str) -> str:
    """``command`` under ``/bin/sh``, after a first stderr line naming its process group.

    sshd makes each session's shell a session leader, so ``$$`` there is the group of
    everything the command starts: a run past its time is killed whole with it. The
    SSH ``signal`` request is sent too, but sshd honours it only with privilege
    separation, and the simulated hosts' sshd runs without.
    """
    return f"echo {GROUP_MARK}$$ >&2; exec /bin/sh -c {shlex.quote(command)}"


def _group_of(first: object) -> tuple[int | None, bytes]:
    """The process group from the first stderr line, or None and the line (not ours)."""
    line = as_bytes(first)
    text = line.decode("ascii", "replace").strip()
    if text.startswith(GROUP_MARK) and text[len(GROUP_MARK) :].isdigit():
        return int(text[len(GROUP_MARK) :]), b""
    return None, line


async def _kill(
    conn: asyncssh.SSHClientConnection, proc: asyncssh.SSHClientProcess[bytes], group: int | None
) -> None:
    """End a run that outlived its time: its whole process group, then its channel."""
    with contextlib.suppress(asyncssh.Error, OSError):
        proc.send_signal("KILL")  # enough where sshd honours it
    if group is not None and group > 1:
        with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
            await conn.run(f"kill -KILL -- -{group}", check=False, timeout=KILL_TIMEOUT_S)


def _lines(value: object) -> tuple[str, ...]:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
    lines = [line.rstrip()[:MAX_LINE] for line in text.splitlines() if line.strip()]
    return tuple(lines[-MAX_OUTPUT_LINES:])  # the end says how it went
