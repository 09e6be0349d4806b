"""Admitting a passthrough session: the same budgets, residency, leases and metering
as a recorded one, in the form the host can be held to.

The rules are in :mod:`gateway.domain.policy.passthrough`; this module applies them to
live state. A passthrough session leases every usable GPU of its host (it could
use any of them), is metered at those GPUs' price over its time plus its
download bytes at the host's egress price, and is refused over budget. What
the gateway cannot see inside the session is refused with the reason, never
assumed away.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.domain.inventory.leases import LeaseRefused
from gateway.domain.models import Host, Principal
from gateway.domain.policy.passthrough import passthrough_accounts, passthrough_residency

RELEASE_WAIT_S = 5.0  # bound on waiting for a just-ended hold's lease to be released

if TYPE_CHECKING:
    from gateway.services.live import LiveState
    from gateway.services.sessions.context import FrontContext


@dataclass(slots=True)
class HostHold:
    """One user's hold on a host's GPUs, shared by their passthrough sessions there.

    VS Code, ``scp`` and a shell to one host are one user on one machine: they
    share one lease and one GPU meter (so parallel channels are not billed
    twice), held from the first session's start to the last one's end.
    """

    hold_id: str  # the lease's and the GPU meter's session id
    gpus: tuple[int, ...]
    sessions: set[str] = field(default_factory=set)


@dataclass
class PassthroughHolds:
    """Every live :class:`HostHold`, by (user, host); one admission at a time."""

    by_key: dict[tuple[str, str], HostHold] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Leases being released, set when done: a new hold on that host waits for it.
    releasing: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)


@dataclass(slots=True)
class PassthroughAdmission:
    """What a passthrough session was given; :meth:`end` gives it back."""

    session_id: str
    user: str
    host: str
    accounts: tuple[str, ...]  # what the user's certificate may open on the host
    hold: HostHold | None = None
    budget_warning: str = ""

    @property
    def gpus(self) -> tuple[int, ...]:
        return self.hold.gpus if self.hold is not None else ()

    def end(self, ctx: FrontContext, bytes_down: int) -> float | None:
        """Stop the session's meter and, with the host's last session, the GPU meter
        and lease; returns the cost this session closes. Safe to call twice."""
        live = ctx.live
        hold, self.hold = self.hold, None
        if hold is None:
            return None
        live.add_egress(self.session_id, bytes_down)
        own = live.stop_meter(self.session_id)
        cost = 0.0 if own is None else own.total
        hold.sessions.discard(self.session_id)
        if not hold.sessions:
            key = (self.user, self.host)
            holds = ctx.passthrough_holds
            holds.by_key.pop(key, None)
            shared = live.stop_meter(hold.hold_id)
            cost += 0.0 if shared is None else shared.total
            if hold.gpus:
                done = holds.releasing[key] = asyncio.Event()
                ctx.spawn(_release(live, holds, key, hold.hold_id, done))
        return round(cost, 6)


async def _release(
    live: LiveState,
    holds: PassthroughHolds,
    key: tuple[str, str],
    hold_id: str,
    done: asyncio.Event,
) -> None:
    try:
        await live.release(hold_id)
    finally:
        done.set()
        if holds.releasing.get(key) is done:
            del holds.releasing[key]


async def admit_passthrough(
    ctx: FrontContext, principal: Principal, host: Host, session_id: str
) -> PassthroughAdmission | str:
    """Admit a passthrough session that role policy allowed, or say why not."""
    accounts = passthrough_accounts(principal, host)
    if not accounts:
        return (
            f"no role names an account on {host.name} for passthrough; a role with "
            "accounts = ['*'] cannot be enforced at the host (name the accounts)"
        )
    admission = PassthroughAdmission(session_id, principal.user, host.name, accounts)
    live = ctx.live
    residency = passthrough_residency(host, live.datasets)
    if not residency.allowed:
        return residency.reason
    holds = ctx.passthrough_holds
    async with holds.lock:
        budget = await live.budget(principal.user, principal.team)
        if not budget.allowed:
            return budget.reason
        if budget.warning:
            admission.budget_warning = budget.reason
        key = (principal.user, host.name)
        hold = holds.by_key.get(key)
        releasing = holds.releasing.get(key)
        if hold is None and releasing is not None:
            # The user's last session here just ended: its lease goes before a new one.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(releasing.wait(), RELEASE_WAIT_S)
        if hold is None:
            # One id per user and host: replicas serving that user there share the lease.
            made = await _new_hold(live, principal, host, f"pt-{principal.user}@{host.name}")
            if isinstance(made, str):
                return made
            hold = holds.by_key[key] = made
        hold.sessions.add(session_id)
        admission.hold = hold
        live.start_meter(session_id, principal.user, principal.team, host, 0)  # egress
    return admission


async def _new_hold(
    live: LiveState, principal: Principal, host: Host, hold_id: str
) -> HostHold | str:
    usable = live.usable_gpus(host)
    gpus: tuple[int, ...] = ()
    if usable:
        lease = await live.lease(host, hold_id, len(usable), share=True)
        if isinstance(lease, LeaseRefused):
            return (
                f"passthrough leases every GPU of {host.name} (the gateway cannot see "
                f"which ones it uses): {lease.reason}"
            )
        gpus = lease.gpus
    live.start_meter(hold_id, principal.user, principal.team, host, len(gpus))
    return HostHold(hold_id, gpus)
