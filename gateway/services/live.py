"""Live state: host probes, GPU leases, running costs, budgets, residency, placement.

One :class:`LiveState` per gateway process. It runs a probe per inventory host
(SSH round trip on a kept connection, ``nvidia-smi`` every few seconds), owns
the GPU lease allocator (its leases live in the gateway's database, shared by
every replica on it), and answers the questions the SSH front and the API
ask: is this host up, how far is it, which GPUs are free, what does this
session cost so far, may this user start another session, may this data set
be processed there, and where should a job run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from gateway.adapters.hosts.hostprobe import HostProbe, HostStatus
from gateway.adapters.hosts.probes import ProbeCredentials, SshHostLink
from gateway.adapters.storage.livecosts import LiveCostStore
from gateway.adapters.storage.sessions import SessionStore
from gateway.domain.inventory.hosts import Inventory
from gateway.domain.inventory.leases import Lease, LeaseAllocator, LeaseRefused, LeaseStore
from gateway.domain.metering.budgets import BudgetDecision, BudgetLimits, check, check_all
from gateway.domain.metering.meter import Cost, Rate, SessionMeter
from gateway.domain.models import AccessRequest, Decision, Host, Mode, Principal
from gateway.domain.placement import Constraints, HostSnapshot, Placement, Weights, rank_hosts
from gateway.domain.policy.residency import DataSet, check_named_residency
from gateway.domain.policy.rules import evaluate
from gateway.errors import StorageError

log = structlog.get_logger("gpuhop.live")


@dataclass(frozen=True, slots=True)
class HostView:
    """One host's live numbers, for the API and placement."""

    status: Literal["up", "down", "unknown"]
    rtt_ms: float | None
    rtt_p95_ms: float | None
    history: tuple[float | None, ...]
    gpus_total: int
    gpus_free: int
    utilization_pct: float | None
    gpu_state: str  # nvidia-smi: ok / no_gpus / no_driver / error / unknown
    error: str


@dataclass
class IdleWatch:
    """A session holding GPUs, watched for idleness (no traffic and idle GPUs)."""

    session_id: str
    host: str
    gpus: tuple[int, ...]
    last_activity: Callable[[], float]  # monotonic time of the last byte either way
    warn: Callable[[str], None]
    end: Callable[[str], None]
    warned: bool = False


@dataclass
class MeteredSession:
    session_id: str
    user: str
    team: str
    host: Host
    meter: SessionMeter


class LiveState:
    def __init__(
        self,
        inventory: Inventory,
        credentials: ProbeCredentials | None,
        *,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
        gpu_interval_s: float = 5.0,
        datasets: Iterable[DataSet] = (),
        budgets: Mapping[tuple[str, str], BudgetLimits] | None = None,
        rates: Mapping[str, Rate] | None = None,
        clock: Callable[[], float] = time.time,
        lease_store: LeaseStore | None = None,
    ) -> None:
        """``lease_store`` is the gateway's database (``Storage.leases``), shared by
        every replica; unit tests may leave it out for one in memory."""
        self.inventory = inventory
        self._creds = credentials
        self._interval = interval_s
        self._timeout = timeout_s
        self._gpu_interval = gpu_interval_s
        self.datasets = {d.name: d for d in datasets}
        self.budgets = dict(budgets or {})
        self._rates = dict(rates or {})
        self._clock = clock
        self.leases = LeaseAllocator(lease_store)
        self.probes: dict[str, HostProbe] = {}
        self._probe_tasks: dict[str, asyncio.Task[None]] = {}
        self._started = False
        self._tasks: list[asyncio.Task[None]] = []
        self.metered: dict[str, MeteredSession] = {}
        self.session_store: SessionStore | None = None
        self.live_costs: LiveCostStore | None = None  # every replica's running meters
        self._cost_writes: dict[str, asyncio.Task[None]] = {}
        self.idle: dict[str, IdleWatch] = {}
        self.idle_util_pct = 5.0
        self.idle_timeout_s = 0.0
        self.idle_warn_s = 300.0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started = True
        if self.idle_timeout_s > 0:
            self._tasks.append(loop.create_task(self._reap_idle()))
        for host in self.inventory.hosts:
            self._start_probe(host)

    def _start_probe(self, host: Host) -> None:
        if self._creds is None:
            return
        probe = HostProbe(
            host.name,
            SshHostLink(host, self._creds, connect_timeout_s=max(self._timeout, 5.0)),
            interval_s=self._interval,
            timeout_s=self._timeout,
            gpu_interval_s=self._gpu_interval,
        )
        self.probes[host.name] = probe
        self._probe_tasks[host.name] = asyncio.get_running_loop().create_task(self._run(probe))

    async def _stop_probe(self, name: str) -> None:
        task = self._probe_tasks.pop(name, None)
        probe = self.probes.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if probe is not None:
            with contextlib.suppress(Exception):
                await probe.close()

    def update(
        self,
        inventory: Inventory,
        datasets: Iterable[DataSet],
        budgets: Mapping[tuple[str, str], BudgetLimits],
    ) -> None:
        """Swap in a new directory (admin changes): hosts added get probes, hosts
        removed lose theirs, hosts changed are probed afresh. Leases and meters of
        running sessions stay as they are."""
        old = {h.name: h for h in self.inventory.hosts}
        self.inventory = inventory
        self.datasets = {d.name: d for d in datasets}
        self.budgets = dict(budgets)
        if not self._started:
            return
        new = {h.name: h for h in inventory.hosts}
        for name, host in old.items():
            if new.get(name) != host:
                self._spawn(self._stop_probe(name))
        for name, host in new.items():
            if old.get(name) != host:
                self._spawn(self._restart_probe(name, host))

    async def _restart_probe(self, name: str, host: Host) -> None:
        await self._stop_probe(name)
        if self.inventory.host(name) == host:  # still current after the await
            self._start_probe(host)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, max(0.5, self.idle_timeout_s / 8)))
            self.check_idle(time.monotonic())

    def check_idle(self, now: float) -> None:
        """Warn, then end, sessions whose GPUs sit idle with no traffic (admins set it)."""
        if self.idle_timeout_s <= 0:
            return
        warn_at = max(0.0, self.idle_timeout_s - self.idle_warn_s)
        for watch in list(self.idle.values()):
            quiet = now - watch.last_activity()
            if quiet < warn_at or not self._gpus_idle(watch):
                watch.warned = False if quiet < warn_at else watch.warned
                continue
            if quiet >= self.idle_timeout_s:
                self.idle.pop(watch.session_id, None)
                watch.end(
                    f"idle for {quiet:.0f}s with GPU utilisation under "
                    f"{self.idle_util_pct:g}%: session ended, GPUs released"
                )
            elif not watch.warned:
                watch.warned = True
                left = self.idle_timeout_s - quiet
                watch.warn(f"this session is idle; it will be ended in {left:.0f}s")

    def _gpus_idle(self, watch: IdleWatch) -> bool:
        """True only when nvidia-smi says every leased GPU is under the threshold."""
        st = self.status(watch.host)
        if st is None or st.gpus is None or st.gpus.state != "ok":
            return False  # unknown is never idle
        util = {g.index: g.utilization_pct for g in st.gpus.gpus}
        return all(
            util.get(i) is not None and util[i] < self.idle_util_pct  # type: ignore[operator]
            for i in watch.gpus
        )

    async def _run(self, probe: HostProbe) -> None:
        try:
            await probe.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a probe must never take the gateway down
            log.error("probe stopped", host=probe.status().name, error=str(exc))

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._probe_tasks.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for probe in self.probes.values():
            with contextlib.suppress(Exception):
                await probe.close()

    # -- hosts --

    def status(self, name: str) -> HostStatus | None:
        probe = self.probes.get(name)
        return probe.status() if probe is not None else None

    def usable_gpus(self, host: Host) -> tuple[int, ...]:
        """GPU indices a lease may use: idle ones per nvidia-smi, else the declared count."""
        st = self.status(host.name)
        if st is not None and st.gpus is not None and st.gpus.state in ("ok", "no_gpus"):
            return tuple(st.gpus.indices)
        return tuple(range(host.gpu_count))

    def view(self, host: Host, leased: int = 0) -> HostView:
        st = self.status(host.name)
        usable = self.usable_gpus(host)
        total = len(usable) if st is not None and st.gpus is not None else host.gpu_count
        util: float | None = None
        gpu_state = "unknown"
        if st is not None and st.gpus is not None:
            gpu_state = st.gpus.state
            values = [g.utilization_pct for g in st.gpus.gpus if g.utilization_pct is not None]
            util = round(sum(values) / len(values), 1) if values else None
        state = "unknown" if st is None else st.state
        return HostView(
            status=state,
            rtt_ms=None if st is None else st.latency.median_ms,
            rtt_p95_ms=None if st is None else st.latency.p95_ms,
            history=() if st is None else st.history,
            gpus_total=total,
            gpus_free=max(0, total - leased),
            utilization_pct=util,
            gpu_state=gpu_state,
            error="" if st is None else st.error,
        )

    async def views(self) -> dict[str, HostView]:
        held = await self.leases.leases()
        per_host: dict[str, int] = {}
        for lease in held:
            per_host[lease.host] = per_host.get(lease.host, 0) + len(lease.gpus)
        return {h.name: self.view(h, per_host.get(h.name, 0)) for h in self.inventory.hosts}

    # -- sessions: leases, residency, budgets, cost --

    async def lease(
        self, host: Host, session_id: str, gpus: int, *, share: bool = False
    ) -> Lease | LeaseRefused:
        """``share``: join the lease ``session_id`` if another replica holds it."""
        usable = self.usable_gpus(host)
        # Each refusal for a conflict means another replica just took a GPU: bounded.
        return await self.leases.acquire(
            host.name,
            session_id,
            gpus,
            usable,
            at=self._clock(),
            tries=len(usable) + 1,
            share=share,
        )

    async def release(self, session_id: str) -> None:
        await self.leases.release(session_id)

    def residency(self, dataset: str, host: Host) -> Decision:
        return check_named_residency(dataset, self.datasets, host)

    def rate(self, host: Host) -> Rate:
        return self._rates.get(host.name) or Rate(host.price_per_gpu_hour, host.egress_per_gb)

    def start_meter(self, session_id: str, user: str, team: str, host: Host, gpus: int) -> None:
        """Meter a session or hold; one that holds GPUs is written to ``live_costs`` too,
        for the other replicas' budget checks."""
        rate = self.rate(host)
        meter = SessionMeter(rate, time.monotonic, gpus=gpus)
        self.metered[session_id] = MeteredSession(session_id, user, team, host, meter)
        costs = self.live_costs
        if costs is not None and gpus > 0:
            at, per_hour = self._clock(), rate.per_gpu_hour * gpus
            self._write_cost(session_id, lambda: costs.start(session_id, user, at, per_hour))

    def add_egress(self, session_id: str, nbytes: int) -> None:
        m = self.metered.get(session_id)
        if m is not None:
            m.meter.add_egress(nbytes)

    def cost(self, session_id: str) -> Cost | None:
        m = self.metered.get(session_id)
        return None if m is None else m.meter.cost()

    def stop_meter(self, session_id: str) -> Cost | None:
        m = self.metered.pop(session_id, None)
        costs = self.live_costs
        if m is not None and costs is not None and m.meter.gpus > 0:
            self._write_cost(session_id, lambda: costs.stop(session_id))
        return None if m is None else m.meter.stop()

    def _write_cost(self, meter_id: str, write: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Write to ``live_costs`` in the background, in order per meter (a stop never
        overtakes its start); a failed write is logged, the session goes on."""
        before = self._cost_writes.get(meter_id)

        async def run() -> None:
            try:
                if before is not None:
                    await before
                await write()
            except StorageError as exc:
                log.error("live cost write failed", meter=meter_id, error=str(exc))

        task = asyncio.get_running_loop().create_task(run())
        self._cost_writes[meter_id] = task
        task.add_done_callback(
            lambda done: (
                self._cost_writes.pop(meter_id, None)
                if self._cost_writes.get(meter_id) is done
                else None
            )
        )

    async def settle(self) -> None:
        """Wait for the running-cost writes already started (at shutdown, in tests)."""
        for _ in range(3):  # a write's done callback may leave a newer one behind
            pending = list(self._cost_writes.values())
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    async def budget(self, user: str, team: str) -> BudgetDecision:
        """Check the user's and the team's limits against what they spent (UTC day, month)."""
        decisions = []
        for kind, name in (("user", user), ("team", team)):
            limits = self.budgets.get((kind, name))
            if limits is None or not name:
                continue
            today, month = await self.spent(kind, name)
            decisions.append(check(today, month, limits, who=f"{kind} {name}"))
        return check_all(decisions) if decisions else check(0.0, 0.0, BudgetLimits(), who=user)

    async def spent(self, kind: str, name: str) -> tuple[float, float]:
        """Spent today and this month (UTC) by a user or a team: ended sessions' final
        costs from the session records, plus live sessions' running costs (this
        replica's from its meters, the others' from ``live_costs``)."""
        users = (
            [name] if kind == "user" else [u.name for u in self.inventory.users if u.team == name]
        )
        day, month = utc_day_and_month(self._clock())
        today = this_month = 0.0
        live_ids = set(self.metered)
        if self.session_store is not None:
            for user in users:
                for r in await self.session_store.list(user=user, limit=10_000):
                    if r.started_at < month or r.id in live_ids or r.cost_usd is None:
                        continue
                    this_month += r.cost_usd
                    if r.started_at >= day:
                        today += r.cost_usd
        for m in self.metered.values():
            if m.user in users:
                running = m.meter.cost().total
                today += running
                this_month += running
        if self.live_costs is not None:  # other replicas' live sessions
            now = self._clock()
            for c in await self.live_costs.elsewhere(users):
                today += c.running(now)
                this_month += c.running(now)
        return today, this_month

    # -- placement --

    async def place(
        self,
        principal: Principal | None,
        want: Constraints,
        weights: Weights,
        *,
        budget_excludes: bool = True,
    ) -> Placement:
        """Hosts ranked for ``want``, and the others with why. A spent budget excludes every
        host, saying so, unless ``budget_excludes`` is False (a golden run refuses each host
        itself, with the same reason, and reports it per host)."""
        views = await self.views()
        spent = ""
        if principal is not None and budget_excludes:
            budget = await self.budget(principal.user, principal.team)
            spent = "" if budget.allowed else budget.reason
        snaps = []
        for host in self.inventory.hosts:
            v = views[host.name]
            denied = spent
            if principal is not None:
                decisions = [
                    evaluate(principal, AccessRequest(host, m, gpus=want.gpus)) for m in Mode
                ]
                if not any(d.allowed for d in decisions):
                    denied = decisions[0].reason
            rate = self.rate(host)
            snaps.append(
                HostSnapshot(
                    host=host,
                    up=v.status == "up",
                    rtt_ms=v.rtt_ms,
                    free_gpus=v.gpus_free,
                    price_per_gpu_hour=rate.per_gpu_hour,
                    egress_per_gb=rate.egress_per_gb,
                    denied=denied,
                )
            )
        return rank_hosts(snaps, want, weights)


def utc_day_and_month(ts: float) -> tuple[float, float]:
    """Epoch seconds of the start of ``ts``'s UTC day and UTC month."""
    t = dt.datetime.fromtimestamp(ts, dt.UTC)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp(), day.replace(day=1).timestamp()
