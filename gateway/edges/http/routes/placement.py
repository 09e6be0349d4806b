"""``/v1/placement``: where a job should run, and why every other host would not do."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway.adapters.storage import Scope
from gateway.domain.placement import Constraints, Placement, Weights
from gateway.edges.http.auth import AnyCaller, Ctx, forbid
from gateway.edges.http.errors import ApiError
from gateway.services.golden import GoldenLimit, golden_principal
from gateway.services.live import LiveState

router = APIRouter(tags=["placement"])

_OUT = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class RankedOut(BaseModel):
    model_config = _OUT

    rank: int
    name: str
    region: str
    score: float
    """Weighted score; lower is better."""
    expected_cost: float
    """GPUs x price x hours (+ expected egress), in ``currency``."""
    currency: str
    price_per_gpu_hour: float
    latency_ms: float
    """End to end: the client's round trip to the gateway plus the gateway's to the host."""
    host_rtt_ms: float
    free_gpus: int
    gpu_model: str
    sync_s: float
    """Estimated time to send the work directory there."""
    sync_throughput_bps: float
    sync_basis: str


class ExcludedOut(BaseModel):
    model_config = _OUT

    name: str
    region: str
    reasons: list[str]


class PlacementOut(BaseModel):
    model_config = _OUT

    ranked: list[RankedOut]
    excluded: list[ExcludedOut]
    weights: dict[str, float]
    """The weighting used: cost, latency, sync (only their ratios matter)."""


@router.get("/placement", response_model=PlacementOut)
async def placement(
    ctx: Ctx,
    caller: AnyCaller,
    gpus: Annotated[int, Query(ge=0, le=1024)] = 1,
    gpu_model: Annotated[str, Query(max_length=64)] = "",
    max_latency_ms: Annotated[float | None, Query(gt=0)] = None,
    max_price: Annotated[float | None, Query(ge=0)] = None,
    data: Annotated[str | None, Query(max_length=64)] = None,
    workdir_bytes: Annotated[int, Query(ge=0)] = 0,
    workdir_files: Annotated[int, Query(ge=0)] = 0,
    hours: Annotated[float, Query(gt=0, le=10_000)] = 1.0,
    client_rtt_ms: Annotated[float, Query(ge=0, le=60_000)] = 0.0,
    w_cost: Annotated[float, Query(ge=0)] = 1.0,
    w_latency: Annotated[float, Query(ge=0)] = 1.0,
    w_sync: Annotated[float, Query(ge=0)] = 1.0,
) -> PlacementOut:
    """Qualifying hosts ranked by a weighted score of expected cost, latency and sync
    time (see docs/placement.md), and every other host with the reasons it is excluded.
    Deterministic for a fixed state."""
    want, weights = _constraints(
        ctx.live,
        data,
        (w_cost, w_latency, w_sync),
        gpus=gpus,
        gpu_model=gpu_model,
        max_latency_ms=max_latency_ms,
        max_price=max_price,
        workdir_bytes=workdir_bytes,
        workdir_files=workdir_files,
        hours=hours,
        client_rtt_ms=client_rtt_ms,
    )
    result = await ctx.live.place(caller.principal, want, weights)
    return PlacementOut(
        ranked=[
            RankedOut(
                rank=r.rank,
                name=r.name,
                region=r.region,
                score=round(r.score, 6),
                expected_cost=round(r.expected_cost, 6),
                currency=r.currency,
                price_per_gpu_hour=r.price_per_gpu_hour,
                latency_ms=round(r.latency_ms, 3),
                host_rtt_ms=round(r.host_rtt_ms, 3),
                free_gpus=r.free_gpus,
                gpu_model=r.gpu_model,
                sync_s=round(r.sync.seconds, 3),
                sync_throughput_bps=round(r.sync.throughput_bps, 1),
                sync_basis=str(r.sync.basis),
            )
            for r in result.ranked
        ],
        excluded=_excluded(result),
        weights={"cost": weights.cost, "latency": weights.latency, "sync": weights.sync},
    )


class GoldenIn(BaseModel):
    """``POST /v1/placement/golden``: ``GET /v1/placement``'s constraints, and what to run."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    gpus: int = Field(1, ge=0, le=1024)
    gpu_model: str = Field("", max_length=64)
    max_latency_ms: float | None = Field(None, gt=0)
    max_price: float | None = Field(None, ge=0)
    data: str | None = Field(None, max_length=64)
    workdir_bytes: int = Field(0, ge=0)
    workdir_files: int = Field(0, ge=0)
    hours: float = Field(1.0, gt=0, le=10_000)
    """How long the real job would run: the predicted cost is for this long."""
    client_rtt_ms: float = Field(0.0, ge=0, le=60_000)
    w_cost: float = Field(1.0, ge=0)
    w_latency: float = Field(1.0, ge=0)
    w_sync: float = Field(1.0, ge=0)
    top: int = Field(3, ge=1, le=8)
    """How many of the best-ranked hosts run it."""
    command: str | None = Field(None, min_length=1, max_length=4096)
    """Shell command run on each host; default: the gateway's ``golden_command``."""
    timeout_s: float = Field(60.0, gt=0, le=600)
    """A host whose command has not ended by then is reported as ``timeout``; at most the
    gateway's ``golden_max_s`` (the default is lowered to it)."""


class GoldenHostOut(BaseModel):
    model_config = _OUT

    rank: int
    name: str
    region: str
    predicted_cost: float
    """From the ranking: GPUs x price x ``hours`` (+ expected egress)."""
    predicted_latency_ms: float
    price_per_gpu_hour: float
    currency: str
    status: Literal["ok", "failed", "denied", "no_gpus", "timeout", "unreachable", "killed"]
    exit_status: int | None
    seconds: float
    """Wall time of the command there, as the gateway saw it."""
    rtt_ms: float | None
    """One SSH round trip on the connection it ran over, just before (None: not reached)."""
    measured_cost: float
    """What the run's session cost: the GPUs leased, at the host's price, for as long as
    they were held (a little longer than ``seconds``), plus its output as egress."""
    gpus: list[int]
    """The GPUs leased for the run (nvidia-smi indices)."""
    output: list[str]
    """The last lines of its output (at most 8)."""
    error: str
    session_id: str = ""
    """The run's session (its record, recording and kill handle); empty if it never started."""


class GoldenOut(BaseModel):
    model_config = _OUT

    command: str
    hosts: list[GoldenHostOut]
    """The candidates in rank order, each with its prediction beside its measurement."""
    excluded: list[ExcludedOut]


@router.post("/placement/golden", response_model=GoldenOut)
async def golden(request: Request, ctx: Ctx, caller: AnyCaller, body: GoldenIn) -> GoldenOut:
    """Run a short command on the best-ranked hosts at once and report measured time and
    cost beside the prediction, before a long job is committed. Each host's run is a
    session: policy-checked, GPUs leased, metered and budgeted, recorded, listed live
    and killable; audited as ``placement.golden`` per host. Capped per user (429 past
    ``golden_max_running`` runs at once, 422 past ``golden_max_s``); a CI token needs a
    role with ``ci_golden = true``."""
    if caller.principal is None:
        raise ApiError(403, "forbidden", f"{caller.user} is not a user in the inventory")
    principal = golden_principal(caller.principal, caller.scope is Scope.CI)
    if not principal.roles:
        await forbid(
            request, caller, "a CI token may start golden runs only with a role that sets ci_golden"
        )
    want, weights = _constraints(
        ctx.live,
        body.data,
        (body.w_cost, body.w_latency, body.w_sync),
        gpus=body.gpus,
        gpu_model=body.gpu_model,
        max_latency_ms=body.max_latency_ms,
        max_price=body.max_price,
        workdir_bytes=body.workdir_bytes,
        workdir_files=body.workdir_files,
        hours=body.hours,
        client_rtt_ms=body.client_rtt_ms,
    )
    # The runner refuses each host on a spent budget and says so per host.
    ranked = await ctx.live.place(principal, want, weights, budget_excludes=False)
    candidates = ranked.ranked[: body.top]
    hosts = [ctx.inventory.host(r.name) for r in candidates]
    command = body.command or ctx.golden.default_command
    timeout_s = body.timeout_s
    if "timeout_s" not in body.model_fields_set:  # the default bows to the gateway's cap
        timeout_s = min(timeout_s, ctx.golden.limits.max_seconds)
    try:
        results = await ctx.golden.run(
            principal, [h for h in hosts if h is not None], command, body.gpus, timeout_s
        )
    except GoldenLimit as exc:
        if exc.status == 429:
            raise ApiError(429, "rate_limited", exc.reason) from exc
        raise ApiError(422, "invalid_request", exc.reason) from exc
    by_name = {r.host: r for r in results}
    out: list[GoldenHostOut] = []
    for r in candidates:
        got = by_name.get(r.name)
        if got is None:
            continue  # left the inventory between ranking and running
        out.append(
            GoldenHostOut(
                rank=r.rank,
                name=r.name,
                region=r.region,
                predicted_cost=round(r.expected_cost, 6),
                predicted_latency_ms=round(r.latency_ms, 3),
                price_per_gpu_hour=r.price_per_gpu_hour,
                currency=r.currency,
                status=got.status,
                exit_status=got.exit_status,
                seconds=round(got.seconds, 3),
                rtt_ms=got.rtt_ms,
                measured_cost=got.cost,
                gpus=list(got.gpus),
                output=list(got.output),
                error=got.error,
                session_id=got.session_id,
            )
        )
    return GoldenOut(
        command=command,
        hosts=out,
        excluded=_excluded(ranked),
    )


def _constraints(
    live: LiveState,
    data: str | None,
    weights: tuple[float, float, float],
    **fields: Any,
) -> tuple[Constraints, Weights]:
    """The ranking inputs both endpoints take: 404 for an unknown data set, 422 for
    constraints or weights the ranking refuses."""
    dataset = None
    if data:
        dataset = live.datasets.get(data)
        if dataset is None:
            raise ApiError(404, "unknown_dataset", f"no data set named {data!r}")
    try:
        chosen = Weights(*weights)
        return Constraints(dataset=dataset, **fields), chosen
    except ValueError as exc:
        raise ApiError(422, "bad_constraints", str(exc)) from exc


def _excluded(placement: Placement) -> list[ExcludedOut]:
    return [
        ExcludedOut(name=e.name, region=e.region, reasons=list(e.reasons))
        for e in placement.excluded
    ]
