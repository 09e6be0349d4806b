"""Live latency, GPU leases, metering, residency and placement against a real gateway."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuhop_sim.delayproxy import ThreadedDelayProxy
from tests.integration.conftest import need_openssh
from tests.integration.gwstack import GatewayStack

pytestmark = pytest.mark.openssh

INJECTED = {"sg-1": 5.0, "my-1": 40.0, "ae-1": 120.0}
RATE = 2.5  # price_per_gpu_hour in GatewayStack.write_config

ROLES = """
[[roles]]
name = "rec"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]
max_gpus = 4

[[datasets]]
name = "sg-patients"
regions = ["sg"]
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayStack, dict[str, Any]]]:
    need_openssh()
    stack = GatewayStack(tmp_path_factory.mktemp("live"))
    stack.ca()
    proxies: dict[str, ThreadedDelayProxy] = {}
    try:
        for name in ("sg-1", "my-1", "ae-1", "sg-2"):
            host = stack.add_host(name)
            if name in INJECTED:
                proxy = ThreadedDelayProxy("127.0.0.1", host.port, INJECTED[name])
                proxy.start()
                proxies[name] = proxy
                stack.host_addresses[name] = ("127.0.0.1", proxy.port)
        stack.add_user("rita")
        stack.write_config(ROLES, {"rita": ["rec"]})
        stack.start_gateway()
        token = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "token",
                "create",
                "--config",
                str(stack.config),
                "--user",
                "rita",
                "--scope",
                "admin",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        yield stack, {"token": token, "proxies": proxies}
    finally:
        stack.close()
        for proxy in proxies.values():
            proxy.stop()


def _api(stack: GatewayStack, token: str, path: str, **params: Any) -> Any:
    r = httpx.get(
        f"http://127.0.0.1:{stack.api_port}/v1{path}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    r.raise_for_status()
    return r.json()


def _hosts(stack: GatewayStack, token: str) -> dict[str, dict[str, Any]]:
    return {h["name"]: h for h in _api(stack, token, "/hosts")}


def _wait(pred: Any, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s")


def _direct(stack: GatewayStack, host: str, command: str, **env: str) -> list[str]:
    opts = [f"-oSetEnv={' '.join(f'{k}={v}' for k, v in env.items())}"] if env else []
    cfg = str(stack.ssh_config(stack.users["rita"]))  # rita has a recorded-mode role
    return ["ssh", "-F", cfg, *opts, "-T", f"rita+{host}@gw", command]


def test_rtt_matches_injected_delay(live: tuple[GatewayStack, dict[str, Any]]) -> None:
    stack, ctx = live
    _wait(lambda: all(h["rtt_ms"] is not None for h in _hosts(stack, ctx["token"]).values()), 20)
    time.sleep(3)  # a few samples for the median
    hosts = _hosts(stack, ctx["token"])
    baseline = hosts["sg-2"]["rtt_ms"]
    assert baseline < 5
    for name, injected in INJECTED.items():
        assert abs(hosts[name]["rtt_ms"] - (injected + baseline)) <= 5, (name, hosts[name])
        assert hosts[name]["status"] == "up"
        assert hosts[name]["rtt_history"]


def test_host_down_and_up_again(live: tuple[GatewayStack, dict[str, Any]]) -> None:
    stack, ctx = live
    proxy: ThreadedDelayProxy = ctx["proxies"]["my-1"]
    _wait(lambda: _hosts(stack, ctx["token"])["my-1"]["status"] == "up", 20)
    proxy.stop()
    down = _wait(lambda: _hosts(stack, ctx["token"])["my-1"]["status"] == "down", 10)
    assert down <= 5
    proxy.restart()
    up = _wait(lambda: _hosts(stack, ctx["token"])["my-1"]["status"] == "up", 10)
    assert up <= 5


def test_gpu_leases_are_exclusive_and_return(live: tuple[GatewayStack, dict[str, Any]]) -> None:
    stack, ctx = live
    procs = [
        subprocess.Popen(
            _direct(stack, "sg-2", "echo got=$CUDA_VISIBLE_DEVICES; sleep 30", GPUHOP_GPUS="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(20)
    ]
    try:
        granted: list[str] = []
        refused: list[bytes] = []

        def settle(p: subprocess.Popen[bytes]) -> None:
            assert p.stdout is not None and p.stderr is not None
            line = p.stdout.readline()
            if line.startswith(b"got="):
                granted.append(line.decode().strip().split("=", 1)[1])
            else:
                p.wait(30)
                refused.append(p.stderr.read())

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            list(pool.map(settle, procs))
        assert sorted(granted) == ["0", "1", "2", "3"]  # each GPU once, never twice
        assert len(refused) == 16
        assert all(b"gpuhop: denied:" in err and b"GPU" in err for err in refused)
        leased = _hosts(stack, ctx["token"])["sg-2"]
        assert leased["gpus_free"] == 0
        for p in procs:  # the clients die hard: the gateway must notice and release
            p.send_signal(signal.SIGKILL)
        _wait(lambda: _hosts(stack, ctx["token"])["sg-2"]["gpus_free"] == 4, 15)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
            for stream in (p.stdout, p.stderr):
                if stream is not None:
                    stream.close()


def test_final_cost_matches_rate_and_duration(live: tuple[GatewayStack, dict[str, Any]]) -> None:
    stack, ctx = live
    result = stack.run(
        _direct(stack, "sg-2", "sleep 3; head -c 1000000 /dev/zero", GPUHOP_GPUS="2")
    )
    assert result.returncode == 0, result.stderr
    ends = stack.wait_audit_events("session.end", lambda e: e.get("gpus") == 2)
    end = ends[-1] if ends else None
    assert end is not None
    expected = 2 * RATE * float(end["duration_s"]) / 3600  # egress price is 0 here
    assert abs(float(end["cost_usd"]) - expected) <= 0.01 * expected
    record = _api(stack, ctx["token"], f"/sessions/{end['session_id']}")
    assert abs(record["cost_usd"] - expected) <= 0.01 * expected
    # Totals per user, host and day include it.
    for by, key in (("user", "rita"), ("host", "sg-2")):
        rows = {r["key"]: r for r in _api(stack, ctx["token"], "/costs", by=by)}
        assert rows[key]["cost"] >= float(end["cost_usd"]) - 1e-6
        assert rows[key]["gpu_hours"] > 0
    days = _api(stack, ctx["token"], "/costs", by="day")
    assert len(days) >= 1 and days[0]["key"].count("-") == 2


def test_residency_enforced_by_the_gateway(live: tuple[GatewayStack, dict[str, Any]]) -> None:
    stack, _ = live
    ok = stack.run(_direct(stack, "sg-2", "true", GPUHOP_DATA="sg-patients"))
    assert ok.returncode == 0, ok.stderr
    for host in ("my-1", "ae-1"):
        result = stack.run(_direct(stack, host, "echo ran", GPUHOP_DATA="sg-patients"))
        assert result.returncode == 255
        assert b"ran" not in result.stdout
        assert b"gpuhop: denied:" in result.stderr and b"sg-patients" in result.stderr
    denies = [e for e in stack.audit_events("channel.deny") if "sg-patients" in str(e["reason"])]
    assert {e["host"] for e in denies} >= {"my-1", "ae-1"}


def test_placement_is_deterministic_and_explains_exclusions(
    live: tuple[GatewayStack, dict[str, Any]],
) -> None:
    stack, ctx = live
    _wait(lambda: all(h["status"] == "up" for h in _hosts(stack, ctx["token"]).values()), 20)
    params = {"gpus": 2, "data": "sg-patients", "max_latency_ms": 100}
    first = _api(stack, ctx["token"], "/placement", **params)
    names = [r["name"] for r in first["ranked"]]
    assert set(names) <= {"sg-1", "sg-2"} and names
    excluded = {e["name"]: e["reasons"] for e in first["excluded"]}
    assert set(excluded) | set(names) == {"sg-1", "sg-2", "my-1", "ae-1"}
    assert all(excluded[n] for n in excluded)
    assert any("sg-patients" in r for r in excluded["ae-1"])
    again = _api(stack, ctx["token"], "/placement", **params)
    assert [r["name"] for r in again["ranked"]] == names
    assert again["excluded"] == first["excluded"]
    Path(stack.root / "placement.json").write_text(json.dumps(first))


@pytest.fixture
def idle_stack(tmp_path: Path) -> Iterator[GatewayStack]:
    from tests.integration.conftest import build_stack

    stack = build_stack(
        tmp_path,
        extra_gateway="idle_timeout_s = 4.0\nidle_warn_s = 2.0\nprobe_gpu_interval_s = 1.0",
    )
    try:
        stack.start_gateway()
        yield stack
    finally:
        stack.close()


def test_idle_session_is_warned_then_ended(idle_stack: GatewayStack) -> None:
    started = time.monotonic()
    result = idle_stack.run(_direct(idle_stack, "sg-1", "sleep 60", GPUHOP_GPUS="1"), timeout=40)
    assert result.returncode == 255
    assert time.monotonic() - started < 20
    assert b"warning: this session is idle" in result.stderr
    assert b"GPUs released" in result.stderr
    assert idle_stack.audit_events("session.idle_warn")
    _wait(lambda: idle_stack.audit_events("session.idle_end"), 5)


def test_active_shell_or_busy_gpu_is_never_idle(idle_stack: GatewayStack) -> None:
    from gpuhop_sim.gpustate import default_gpus, with_load

    talking = "for i in $(seq 14); do echo tick; sleep 0.5; done"
    active = idle_stack.run(_direct(idle_stack, "sg-1", talking, GPUHOP_GPUS="1"), timeout=40)
    assert active.returncode == 0, active.stderr
    host = idle_stack.hosts["my-1"]
    host.set_gpus(
        [
            with_load(g, utilization=90, memory_used_mib=1000)
            for g in default_gpus("my-1", 4, "NVIDIA A100-SXM4-80GB")
        ]
    )
    time.sleep(2)  # the next nvidia-smi round sees the load
    busy = idle_stack.run(_direct(idle_stack, "my-1", "sleep 8", GPUHOP_GPUS="1"), timeout=40)
    assert busy.returncode == 0, busy.stderr
    assert not idle_stack.audit_events("session.idle_end")
