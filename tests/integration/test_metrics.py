"""``GET /metrics`` from a real gateway after real OpenSSH sessions and a failed login.

The scrape is parsed with prometheus_client's own parser, so the text format
is checked by the reference implementation, not by string matching.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.adapters.audit.store import open_store
from gateway.adapters.keys import UserCA
from gateway.adapters.storage import Scope, open_storage
from gateway.config.loader import Settings
from gateway.edges.http import start_api
from gateway.edges.http.bootstrap import create_token
from gateway.edges.http.metrics import GatewayMetrics, InstrumentedAuditStore
from tests.fakeruntime import api_context, runtime_of
from tests.integration.conftest import build_stack
from tests.integration.gwstack import GatewayStack, new_storage_url

pytestmark = pytest.mark.openssh

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Starter = Callable[[GatewayMetrics | None, bool], Awaitable[tuple[str, str]]]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    s = build_stack(tmp_path_factory.mktemp("metrics"))
    try:
        s.start_gateway()
        # /metrics needs a metrics token by default: scrape as Prometheus would.
        create = [sys.executable, "-m", "gateway.cli", "token", "create"]
        created = subprocess.run(
            [*create, "--config", str(s.config), "--user", "prometheus", "--scope", "metrics"],
            capture_output=True,
            timeout=60,
            check=True,
        )
        SCRAPER[s.api_port] = {"Authorization": f"Bearer {created.stdout.decode().strip()}"}
        yield s
    finally:
        s.close()


SCRAPER: dict[int, dict[str, str]] = {}  # API port -> the scraper's Authorization header


def scrape(port: int, headers: dict[str, str] | None = None) -> tuple[httpx.Response, Samples]:
    sent = SCRAPER.get(port, {}) if headers is None else headers
    response = httpx.get(
        f"http://127.0.0.1:{port}/metrics", headers=sent, trust_env=False, timeout=10
    )
    out: Samples = {}
    if response.status_code == 200:
        for family in text_string_to_metric_families(response.text):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
    return response, out


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(gw: GatewayStack, check: Callable[[Samples], bool], timeout: float = 15.0) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        _, samples = scrape(gw.api_port)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def test_metrics_follow_sessions_logins_probes_and_requests(gw: GatewayStack) -> None:
    response, before = scrape(gw.api_port)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert get(before, "gpuhop_build_info", version=__version__) == 1
    ended = "gpuhop_sessions_ended_total"

    # A session held open shows in the live gauge, then is counted with its bytes.
    alice = gw.users["alice"]
    cmd = gw.jump_command(alice, "sg-1", "head -c 70000 /dev/zero; sleep 2")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as held:
        live = wait_for(gw, lambda s: get(s, "gpuhop_sessions_active", mode="passthrough") >= 1)
        assert get(live, "gpuhop_sessions_active", mode="passthrough") == 1
        out, err = held.communicate(timeout=30)
    assert held.returncode == 0, err.decode()
    assert len(out) == 70000

    # A login by a user the gateway does not know.
    failed = gw.run(gw.gateway_command(gw.users["mallory"], "true"))
    assert failed.returncode != 0
    unknown = (
        "gpuhop_auth_failures_total",
        frozenset({("channel", "ssh"), ("reason", "unknown_user")}),
    )

    # An API call without a token, and one that succeeds.
    base = f"http://127.0.0.1:{gw.api_port}"
    assert httpx.get(f"{base}/v1/me", trust_env=False, timeout=10).status_code == 401
    assert httpx.get(f"{base}/v1/health", trust_env=False, timeout=10).status_code == 200

    after = wait_for(
        gw,
        lambda s: (
            get(s, ended, mode="passthrough") > get(before, ended, mode="passthrough")
            and s.get(unknown, 0) > before.get(unknown, 0)
            and get(s, "gpuhop_sessions_active", mode="passthrough") == 0
            and get(s, "gpuhop_host_up", host="sg-1", region="sg") == 1
        ),
    )
    started = "gpuhop_sessions_started_total"
    assert get(after, started, mode="passthrough") - get(before, started, mode="passthrough") == 1
    assert get(after, ended, mode="passthrough") - get(before, ended, mode="passthrough") == 1
    assert after.get(unknown, 0) - before.get(unknown, 0) == 1
    assert get(after, "gpuhop_sessions_active", mode="passthrough") == 0
    down = get(after, "gpuhop_relayed_bytes_total", direction="down", mode="passthrough")
    up = get(after, "gpuhop_relayed_bytes_total", direction="up", mode="passthrough")
    assert down > 70000 and up > 0  # SSH framing and the handshake ride on top
    api = "gpuhop_auth_failures_total"
    assert get(after, api, channel="api", reason="token_missing") >= 1

    # Probes: both hosts up, a measured round trip, in seconds.
    for host, region in (("sg-1", "sg"), ("my-1", "my")):
        assert get(after, "gpuhop_host_up", host=host, region=region) == 1
        rtt = get(after, "gpuhop_host_rtt_median_seconds", host=host, region=region)
        assert 0 < rtt < 1

    # Audit writes and API requests are timed.
    assert get(after, "gpuhop_audit_write_duration_seconds_count") >= 6
    count = "gpuhop_api_request_duration_seconds_count"
    assert get(after, count, method="GET", route="/v1/health", status="200") >= 1
    assert get(after, count, method="GET", route="/v1/me", status="401") >= 1
    assert get(after, count, method="GET", route="/metrics", status="200") >= 1
    assert get(after, "process_resident_memory_bytes") > 0
    if gw.database_url.startswith("postgresql"):  # the buffering store reports its state
        assert get(after, "gpuhop_audit_database_up") == 1
        assert ("gpuhop_audit_pending_events", frozenset()) in after


# ---------------------------------------------------------------- an in-process API


def _settings(root: Path) -> Settings:
    data: dict[str, Any] = {
        "gateway": {
            "storage_url": new_storage_url(root),
            "recordings_dir": str(root / "recordings"),
            "user_ca_key": str(root / "user_ca"),
            "api_port": 0,
            "ssh_port": 0,
        },
        "users": [{"name": "alice"}],
    }
    return Settings(**data)


@pytest.fixture
async def api_for(tmp_path: Path) -> AsyncIterator[Starter]:
    """Serve the API with the given metrics settings; yields a starter returning (url, admin)."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(metrics: GatewayMetrics | None, token_required: bool) -> tuple[str, str]:
        settings = _settings(tmp_path)
        g = settings.gateway
        audit = open_store(g.storage_url.get_secret_value())
        if metrics is not None:
            audit = InstrumentedAuditStore(audit, metrics)
        storage = await open_storage(g.storage_url.get_secret_value())
        ref = runtime_of(settings, await asyncio.to_thread(UserCA.from_paths, g.user_ca_key))
        ctx = api_context(
            settings,
            ref,
            audit,
            storage,
            {},
            metrics=metrics,
            metrics_token_required=token_required,
        )
        if metrics is not None:
            metrics.register_collectors(ctx.live_sessions, None)
        api = await start_api(ctx, "127.0.0.1", 0)
        admin = await create_token(settings, user="ops", scope=Scope.ADMIN, name="scraper")

        async def stop() -> None:
            await api.stop()
            await storage.close()
            await audit.close()

        cleanups.append(stop)
        return api.url, admin.secret

    yield start
    for stop in reversed(cleanups):
        await stop()


async def test_metrics_can_require_a_token(api_for: Starter) -> None:
    url, secret = await api_for(GatewayMetrics(process=False), True)
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as client:
        refused = await client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "token_missing"
        auth = {"Authorization": f"Bearer {secret}"}
        ok = await client.get("/metrics", headers=auth)
        assert ok.status_code == 200
        families = {f.name for f in text_string_to_metric_families(ok.text)}
        accept = {"Accept": "application/openmetrics-text; version=1.0.0", **auth}
        om = await client.get("/metrics", headers=accept)
    assert {"gpuhop_auth_failures", "gpuhop_sessions_active"} <= families
    assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    parsed = {f.name: f for f in openmetrics_families(om.text)}  # type: ignore[no-untyped-call]
    assert parsed["gpuhop_auth_failures"].type == "counter"
    assert "/metrics" not in (await asyncio.to_thread(_openapi_paths, url))


async def test_no_metrics_no_route(api_for: Starter) -> None:
    url, _ = await api_for(None, False)
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as client:
        response = await client.get("/metrics")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def _openapi_paths(url: str) -> set[str]:
    paths: dict[str, object] = httpx.get(f"{url}/openapi.json", trust_env=False).json()["paths"]
    return set(paths)
