"""``/v1/placement``: where a job should run, and why every other host would not do."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from gateway.api.auth import AnyCaller, Ctx
from gateway.api.errors import ApiError
from gateway.placement.rank import Constraints, Weights

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
    if ctx.live is None:
        raise ApiError(503, "no_live_state", "placement needs the gateway's live state")
    dataset = None
    if data:
        dataset = ctx.live.datasets.get(data)
        if dataset is None:
            raise ApiError(404, "unknown_dataset", f"no data set named {data!r}")
    try:
        weights = Weights(w_cost, w_latency, w_sync)
        want = Constraints(
            gpus=gpus,
            gpu_model=gpu_model,
            max_latency_ms=max_latency_ms,
            max_price=max_price,
            dataset=dataset,
            workdir_bytes=workdir_bytes,
            workdir_files=workdir_files,
            hours=hours,
            client_rtt_ms=client_rtt_ms,
        )
    except ValueError as exc:
        raise ApiError(422, "bad_constraints", str(exc)) from exc
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
        excluded=[
            ExcludedOut(name=e.name, region=e.region, reasons=list(e.reasons))
            for e in result.excluded
        ],
        weights={"cost": weights.cost, "latency": weights.latency, "sync": weights.sync},
    )
