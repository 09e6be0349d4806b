"""The golden test: a short probe job on each placement candidate, measured.

Ranking predicts cost and latency from prices and probes; before a long job
is committed, the golden test runs one short command on the best few hosts at
once and reports what it actually took there: wall time, exit status, the
cost of that time at the host's price, and the last lines of output. It runs
as the caller would run anything on the host: policy-checked (recorded mode,
the account their role grants), the GPUs asked for leased for the duration
and passed as ``CUDA_VISIBLE_DEVICES``, over the gateway's pinned upstream
connection, and audited (``placement.golden`` per host). Hosts that fail,
time out or refuse are reported beside the others, never fatal to the rest.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import asyncssh
import structlog

from gateway.errors import GatewayError
from gateway.inventory.leases import Lease, LeaseRefused, lease_environment
from gateway.metering.meter import Rate
from gateway.models import AccessRequest, Host, Mode, Principal
from gateway.policy.rules import evaluate
from gateway.ssh.upstream import UpstreamPool

log = structlog.get_logger("gpuhop.golden")

MAX_OUTPUT_LINES = 8
MAX_LINE = 200

Status = Literal["ok", "failed", "denied", "no_gpus", "timeout", "unreachable"]


@dataclass(frozen=True, slots=True)
class GoldenResult:
    """One host's run of the golden command."""

    host: str
    status: Status
    exit_status: int | None = None
    seconds: float = 0.0
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
        if not decision.allowed:
            result = GoldenResult(host.name, "denied", error=f"denied: {decision.reason}")
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
        result = GoldenResult(
            result.host,
            result.status,
            result.exit_status,
            result.seconds,
            round(max(gpus, 0) * rate.per_gpu_hour * result.seconds / 3600.0, 6),
            rate.currency,
            lease.gpus if lease is not None else (),
            result.output,
            result.error,
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
        env = dict(lease_environment(lease)) if lease is not None else {}
        started = time.monotonic()
        try:
            proc = await entry.conn.create_process(command, env=env, encoding=None)
            try:
                done = await proc.wait(check=False, timeout=timeout_s)
            except asyncssh.TimeoutError:
                seconds = time.monotonic() - started
                return GoldenResult(
                    host.name, "timeout", seconds=seconds, error=f"no exit after {timeout_s:g} s"
                )
            finally:
                proc.close()
        except (asyncssh.Error, OSError) as exc:
            reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
            return GoldenResult(host.name, "unreachable", error=f"{host.name}: {reason}")
        finally:
            pool.release(entry)
        seconds = time.monotonic() - started
        status = done.exit_status
        out = _lines(done.stdout) or _lines(done.stderr)
        error = "" if status == 0 else (_lines(done.stderr) or (f"exit status {status}",))[-1]
        return GoldenResult(
            host.name,
            "ok" if status == 0 else "failed",
            status,
            seconds,
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
            "gpus": list(r.gpus),
            "cost": r.cost,
            "error": r.error,
        }
        try:
            await self._audit("placement.golden", principal.user, data)
        except Exception as exc:  # the result stands; the log says the record is missing
            log.error("audit write failed", kind="placement.golden", error=str(exc))


def _lines(value: object) -> tuple[str, ...]:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
    lines = [line.rstrip()[:MAX_LINE] for line in text.splitlines() if line.strip()]
    return tuple(lines[-MAX_OUTPUT_LINES:])  # the end says how it went
