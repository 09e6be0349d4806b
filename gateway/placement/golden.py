"""The golden test: a short probe job on each placement candidate, measured.

Ranking predicts cost and latency from prices and probes; before a long job
is committed, the golden test runs one short command on the best few hosts at
once and reports what it actually took there: wall time, the round trip on
the connection it ran over, exit status, the cost of that time at the host's
price, and the last lines of output. It runs as the caller would run anything
on the host: policy-checked (recorded mode, the account their role grants,
their budget), the GPUs asked for leased for the duration and passed as
``CUDA_VISIBLE_DEVICES``, over the gateway's pinned upstream connection, and
audited (``placement.golden`` per host). Hosts that fail, time out or refuse
are reported beside the others, never fatal to the rest; a command that
outlives its time is killed there, not left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import asyncssh
import structlog

from gateway.errors import GatewayError
from gateway.inventory.leases import Lease, LeaseRefused, host_environment
from gateway.inventory.probes import ssh_rtt_ms
from gateway.metering.budgets import BudgetDecision
from gateway.metering.meter import Rate
from gateway.models import AccessRequest, Host, Mode, Principal
from gateway.policy.rules import evaluate
from gateway.ssh.envprotocol import as_bytes
from gateway.ssh.upstream import UpstreamPool

log = structlog.get_logger("gpuhop.golden")

MAX_OUTPUT_LINES = 8
MAX_LINE = 200
GROUP_MARK = "gpuhop-golden-group="
KILL_TIMEOUT_S = 5.0
RTT_AFTER_S = 5.0  # the round trip after the run: bounded, and optional

Status = Literal["ok", "failed", "denied", "no_gpus", "timeout", "unreachable"]


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


class Leases(Protocol):
    """What it needs from ``gateway.live.LiveState``."""

    async def lease(self, host: Host, session_id: str, gpus: int) -> Lease | LeaseRefused: ...

    async def release(self, session_id: str) -> None: ...

    def rate(self, host: Host) -> Rate: ...

    async def budget(self, user: str, team: str) -> BudgetDecision: ...


Audit = Callable[[str, str, dict[str, object]], Awaitable[None]]
AccountFor = Callable[[Principal, Host], str]


class GoldenRunner:
    """Runs one command on several hosts at once; see the module docstring."""

    def __init__(
        self,
        pool: UpstreamPool | None,
        leases: Leases,
        audit: Audit,
        account_for: AccountFor,
        default_command: str,
    ) -> None:
        self._pool, self._leases, self._audit = pool, leases, audit
        self._account_for = account_for
        self.default_command = default_command

    async def run(
        self,
        principal: Principal,
        hosts: Sequence[Host],
        command: str,
        gpus: int,
        timeout_s: float,
    ) -> list[GoldenResult]:
        """Each host's result, in the order given."""
        return list(
            await asyncio.gather(
                *(self._one(principal, h, command, gpus, timeout_s) for h in hosts)
            )
        )

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
        run_id = f"golden-{uuid.uuid4().hex[:12]}"
        lease: Lease | None = None
        if gpus > 0:
            got = await self._leases.lease(host, run_id, gpus)
            if isinstance(got, LeaseRefused):
                result = GoldenResult(host.name, "no_gpus", error=got.reason)
                await self._record(principal, host, account, command, result)
                return result
            lease = got
        try:
            result = await self._execute(principal, host, account, command, lease, timeout_s)
        finally:
            if lease is not None:
                await self._leases.release(run_id)
        result = replace(
            result,
            cost=round(max(gpus, 0) * rate.per_gpu_hour * result.seconds / 3600.0, 6),
            currency=rate.currency,
            gpus=lease.gpus if lease is not None else (),
        )
        await self._record(principal, host, account, command, result)
        return result

    async def _execute(
        self,
        principal: Principal,
        host: Host,
        account: str,
        command: str,
        lease: Lease | None,
        timeout_s: float,
    ) -> GoldenResult:
        if self._pool is None:
            return GoldenResult(host.name, "unreachable", error="the gateway has no upstream pool")
        pool = self._pool
        try:
            entry = await pool.acquire(principal.user, host, account)
        except GatewayError as exc:
            return GoldenResult(host.name, "unreachable", error=str(exc))
        env = host_environment({}, lease)  # no lease: no GPU, not the host's default
        conn = entry.conn
        rtt_ms: float | None = None
        group: int | None = None
        try:
            rtt_ms = await asyncio.wait_for(ssh_rtt_ms(conn), timeout_s)
            started = time.monotonic()
            proc = await conn.create_process(_named(command), env=env, encoding=None)
            try:
                first = await asyncio.wait_for(proc.stderr.readline(), timeout_s)
                group, early = _group_of(first)
                left = max(0.0, timeout_s - (time.monotonic() - started))
                done = await proc.wait(check=False, timeout=left)
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
        status = done.exit_status
        stderr = early + as_bytes(done.stderr)
        out = _lines(done.stdout) or _lines(stderr)
        ended = f"exit status {status}"
        if done.exit_signal is not None:
            ended = f"ended by signal {done.exit_signal[0]}"
        error = "" if status == 0 else (_lines(stderr) or (ended,))[-1]
        return GoldenResult(
            host.name,
            "ok" if status == 0 else "failed",
            status,
            seconds,
            round(rtt_ms, 3),
            output=out,
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
        }
        try:
            await self._audit("placement.golden", principal.user, data)
        except Exception as exc:  # the result stands; the log says the record is missing
            log.error("audit write failed", kind="placement.golden", error=str(exc))


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
