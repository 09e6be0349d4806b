"""GatewayMetrics, the instrumented audit store, scrape-time collectors and API timing."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client.parser import text_string_to_metric_families

from gateway.adapters.audit.memory import MemoryAuditStore
from gateway.adapters.hosts.hostprobe import HostProbe
from gateway.domain.audit.chain import AuditEvent
from gateway.domain.inventory.gpus import GpuInventory
from gateway.domain.inventory.hosts import Inventory
from gateway.domain.models import Host, Mode, Region
from gateway.edges.http.metrics import GatewayMetrics, InstrumentedAuditStore, reason_class
from gateway.edges.http.timing import ApiTiming
from gateway.errors import StorageError, UpstreamError
from gateway.ports import AuditStore
from gateway.services.live import LiveState


def samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed back from the text format."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [
        (["unknown user 'mallory'"], "unknown_user"),
        (["key SHA256:abc is not registered to carol"], "key_not_registered"),
        (["certificate rejected: certificate expired for alice"], "certificate"),
        (["certificate not signed by the gateway user CA"], "certificate"),
        (["unknown user 'x'", "certificate has no principals"], "certificate"),
        (["no acceptable key or certificate offered"], "no_credentials"),
        ([], "no_credentials"),
        (["something new"], "other"),
    ],
)
def test_reason_class(reasons: list[str], expected: str) -> None:
    assert reason_class(reasons) == expected


def test_counters_and_labels_are_bounded() -> None:
    m = GatewayMetrics(process=False)
    assert value(m, "gpuhop_sessions_started_total", mode="recorded") == 0
    m.session_started("passthrough")
    m.session_started("weird-mode")
    m.session_ended("passthrough", 100, 2000)
    m.auth_failed("unknown_user")
    m.auth_failed("token_missing", "api")
    m.auth_failed("made-up code", "api")
    m.audit_write(0.002)
    m.audit_write(3.0, ok=False)
    assert value(m, "gpuhop_sessions_started_total", mode="passthrough") == 1
    assert value(m, "gpuhop_sessions_started_total", mode="other") == 1
    assert value(m, "gpuhop_sessions_ended_total", mode="passthrough") == 1
    assert value(m, "gpuhop_relayed_bytes_total", direction="up", mode="passthrough") == 100
    assert value(m, "gpuhop_relayed_bytes_total", direction="down", mode="passthrough") == 2000
    assert value(m, "gpuhop_auth_failures_total", channel="ssh", reason="unknown_user") == 1
    assert value(m, "gpuhop_auth_failures_total", channel="api", reason="token_missing") == 1
    assert value(m, "gpuhop_auth_failures_total", channel="api", reason="other") == 1
    assert value(m, "gpuhop_audit_write_duration_seconds_count") == 2
    assert value(m, "gpuhop_audit_write_duration_seconds_bucket", le="0.0025") == 1
    assert value(m, "gpuhop_audit_write_failures_total") == 1


def test_registries_are_per_gateway() -> None:
    a, b = GatewayMetrics(), GatewayMetrics()  # no "Duplicated timeseries" between them
    a.session_started("recorded")
    assert value(a, "gpuhop_sessions_started_total", mode="recorded") == 1
    assert value(b, "gpuhop_sessions_started_total", mode="recorded") == 0
    assert value(a, "process_resident_memory_bytes") is not None  # Linux process metrics


class FailingStore(MemoryAuditStore):
    async def append(self, kind: str, actor: str, data: Mapping[str, object]) -> AuditEvent:
        raise StorageError("database down")


async def test_instrumented_store_observes_events_by_kind() -> None:
    m = GatewayMetrics(process=False)
    inner = MemoryAuditStore()
    store: AuditStore = InstrumentedAuditStore(inner, m)  # mypy: it is an AuditStore
    start = {"session_id": "s1", "mode": "recorded"}
    await store.append("session.start", "rita", start)
    await store.append("session.end", "rita", {**start, "bytes_up": 7, "bytes_down": 4096})
    await store.append("forward.close", "rita", {"bytes_up": 1, "bytes_down": 2})
    await store.append("auth.fail", "mallory", {"reasons": ["unknown user 'mallory'"]})
    await store.append("auth.ratelimited", "mallory", {"source": "127.0.0.1"})
    await store.append("api.auth_fail", "anonymous", {"reason": "token_unknown"})
    await store.append("auth.ok", "rita", {})
    assert [e.kind for e in await store.list()] == [e.kind for e in inner.events]
    assert (await store.verify()).ok
    assert value(m, "gpuhop_sessions_started_total", mode="recorded") == 1
    assert value(m, "gpuhop_sessions_ended_total", mode="recorded") == 1
    assert value(m, "gpuhop_relayed_bytes_total", direction="down", mode="recorded") == 4096
    assert value(m, "gpuhop_relayed_bytes_total", direction="up", mode="forward") == 1
    assert value(m, "gpuhop_auth_failures_total", channel="ssh", reason="unknown_user") == 1
    assert value(m, "gpuhop_auth_failures_total", channel="api", reason="token_unknown") == 1
    assert value(m, "gpuhop_auth_bans_total", channel="ssh") == 1
    assert value(m, "gpuhop_audit_write_duration_seconds_count") == 7
    await store.close()
    with pytest.raises(StorageError):
        await store.append("x", "y", {})


async def test_a_start_that_is_not_committed_is_not_counted() -> None:
    m = GatewayMetrics(process=False)
    store = InstrumentedAuditStore(FailingStore(), m)
    with pytest.raises(StorageError):
        await store.append("session.start", "rita", {"mode": "recorded"})
    assert value(m, "gpuhop_sessions_started_total", mode="recorded") == 0
    assert value(m, "gpuhop_audit_write_failures_total") == 1


@dataclass
class Live:
    mode: Mode


class ScriptedLink:
    """A HostLink that answers round trips from a script (a float in ms, or an error)."""

    def __init__(self, *answers: float | None) -> None:
        self.answers: Iterator[float | None] = iter(answers)

    async def round_trip_ms(self) -> float:
        answer = next(self.answers)
        if answer is None:
            raise UpstreamError("no answer")
        return answer

    async def tcp_connect_ms(self) -> float:
        return 0.1

    async def gpus(self) -> GpuInventory:
        return GpuInventory("no_gpus", ())

    def take_connect_ms(self) -> float | None:
        return None

    def reset(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_live_collectors_read_sessions_and_probes_at_scrape_time() -> None:
    hosts = tuple(Host(f"{r}-1", r, "127.0.0.1", n) for n, r in enumerate(("sg", "my", "ae")))
    regions = (Region("sg", "SG"), Region("my", "MY"), Region("ae", "AE"))
    live = LiveState(Inventory(hosts=hosts, regions=regions), None)
    sg = HostProbe("sg-1", ScriptedLink(2.0, 4.0, 30.0), interval_s=1, timeout_s=1)
    my = HostProbe("my-1", ScriptedLink(None), interval_s=1, timeout_s=1)
    for _ in range(3):
        await sg.probe_once()
    await my.probe_once()
    live.probes = {"sg-1": sg, "my-1": my}  # ae-1 never probed: state unknown, no series
    sessions = [Live(Mode.PASSTHROUGH), Live(Mode.PASSTHROUGH), Live(Mode.RECORDED)]
    m = GatewayMetrics(process=False)
    m.register_collectors(lambda: sessions, live)
    assert value(m, "gpuhop_sessions_active", mode="passthrough") == 2
    assert value(m, "gpuhop_sessions_active", mode="recorded") == 1
    assert value(m, "gpuhop_host_up", host="sg-1", region="sg") == 1
    assert value(m, "gpuhop_host_up", host="my-1", region="my") == 0
    assert value(m, "gpuhop_host_up", host="ae-1", region="ae") is None
    assert value(m, "gpuhop_host_rtt_median_seconds", host="sg-1", region="sg") == 0.004
    assert value(m, "gpuhop_host_rtt_p95_seconds", host="sg-1", region="sg") == 0.03
    assert value(m, "gpuhop_host_rtt_median_seconds", host="my-1", region="my") is None
    sessions.clear()  # read again at the next scrape
    assert value(m, "gpuhop_sessions_active", mode="passthrough") == 0
    m.register_collectors(lambda: [Live(Mode.RECORDED)], None)  # replaces, no duplicate error
    assert value(m, "gpuhop_sessions_active", mode="recorded") == 1
    assert value(m, "gpuhop_host_up", host="sg-1", region="sg") is None


async def test_api_timing_labels_route_templates_and_status() -> None:
    m = GatewayMetrics(process=False)
    app = FastAPI()

    v1 = APIRouter()

    @v1.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app.include_router(v1, prefix="/v1")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    app.add_middleware(ApiTiming, metrics=m)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for thing_id in ("1", "things", "v1"):  # values that look like the template's own parts
            assert (await client.get(f"/v1/things/{thing_id}")).status_code == 200
        assert (await client.get("/no/such/path")).status_code == 404
        assert (await client.get("/boom")).status_code == 500
    count = "gpuhop_api_request_duration_seconds_count"
    assert value(m, count, method="GET", route="/v1/things/{thing_id}", status="200") == 3
    assert value(m, count, method="GET", route="unmatched", status="404") == 1
    assert value(m, count, method="GET", route="/boom", status="500") == 1
    routes = {dict(k[1]).get("route") for k in samples(m) if k[0] == count}
    assert routes == {"/v1/things/{thing_id}", "unmatched", "/boom"}


class BufferingStore(MemoryAuditStore):
    """Reports what ``PostgresAuditStore`` reports about its buffer and its database."""

    pending = 3
    available = False
    outages = 2


def test_a_buffering_store_reports_its_queue_and_database() -> None:
    m = GatewayMetrics(process=False)
    InstrumentedAuditStore(BufferingStore(), m)
    assert value(m, "gpuhop_audit_pending_events") == 3
    assert value(m, "gpuhop_audit_database_up") == 0
    assert value(m, "gpuhop_audit_database_outages_total") == 2
    plain = GatewayMetrics(process=False)
    InstrumentedAuditStore(MemoryAuditStore(), plain)  # SQLite and memory stores: no such series
    assert value(plain, "gpuhop_audit_pending_events") is None
