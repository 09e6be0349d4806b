"""The placement golden test against a real gateway and real OpenSSH hosts.

``POST /v1/placement/golden`` and ``gpuhop pick --golden`` on the stack of
``conftest.build_stack`` grown to three hosts: ``sg-1`` direct, ``my-1``
behind a 40 ms delay proxy, ``ae-1``. User ``gina`` may run commands
(recorded mode) in ``sg`` and ``my`` only, so ``ae-1`` ranks but refuses; the
command fails on ``my-1`` alone (each simulated host has its own ``HOME``).
One run reports all three side by side, each audited.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gpuhop_sim.delayproxy import ThreadedDelayProxy
from tests.integration.conftest import ROLES, build_stack
from tests.integration.test_client_cli import Client, Env

pytestmark = pytest.mark.openssh

MY_RTT_MS = 40.0
EXTRA = """
[[roles]]
name = "rec-near"
hosts = ["region:sg", "region:my"]
accounts = ["root"]
modes = ["recorded"]

[[roles]]
name = "rec-all"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]

[[budgets]]
user = "spent"
daily = 0
"""
# Fails on my-1 only: each simulated host's sessions have their own HOME.
SPLIT = 'case "$HOME" in */my-1/*) echo "no CUDA here" >&2; exit 3;; esac; nvidia-smi -L'


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    stack = build_stack(tmp_path_factory.mktemp("golden"))
    proxy: ThreadedDelayProxy | None = None
    try:
        stack.add_host("ae-1")
        proxy = ThreadedDelayProxy("127.0.0.1", stack.hosts["my-1"].port, MY_RTT_MS).start()
        stack.host_addresses["my-1"] = ("127.0.0.1", proxy.port)
        for user in ("gina", "spent"):
            stack.add_user(user)
        users = {"rita": ["rec"], "alice": ["dev"], "gina": ["rec-near", "dev"]}
        stack.write_config(ROLES + EXTRA, {**users, "spent": ["rec-all"]})
        stack.start_gateway()
        wait_for_probes(stack.api_port, Env(stack, proxy).token("rita"))
        yield Env(stack, proxy)
    finally:
        stack.close()
        if proxy is not None:
            proxy.stop()


def wait_for_probes(api_port: int, token: str) -> None:
    """Until every host has a probed round trip: ranking needs it."""
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as api:
        while time.monotonic() < deadline:
            hosts = api.get("/v1/hosts", headers={"Authorization": f"Bearer {token}"}).json()
            if all(h["rtt_ms"] is not None for h in hosts):
                return
            time.sleep(0.2)
    raise AssertionError("the probes never reported every host")


@pytest.fixture(scope="module")
def gina(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Client:
    client = Client(tmp_path_factory.mktemp("gina"))
    env.login(client, "gina")
    return client


@pytest.fixture(scope="module")
def rita(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Client:
    client = Client(tmp_path_factory.mktemp("rita"))
    env.login(client, "rita")  # recorded sessions on every host
    return client


def post(env: Env, token: str, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(base_url=env.url, timeout=120) as api:
        return api.post(
            "/v1/placement/golden", json=body, headers={"Authorization": f"Bearer {token}"}
        )


def test_one_run_reports_a_success_a_failing_host_and_a_denied_one(env: Env, gina: Client) -> None:
    before = len(env.stack.audit_events("placement.golden"))
    result = gina.gpuhop("pick", "--golden", "--gpus", "1", "--json", "--", SPLIT)
    assert result.returncode == 0, result.stderr  # one host ran it: the others are reported
    golden = json.loads(result.stdout)
    assert golden["command"] == SPLIT
    hosts = {h["name"]: h for h in golden["hosts"]}
    assert set(hosts) == {"sg-1", "my-1", "ae-1"}  # the default top is 3
    assert sorted(h["rank"] for h in hosts.values()) == [1, 2, 3]

    ok, failed, denied = hosts["sg-1"], hosts["my-1"], hosts["ae-1"]
    assert (ok["status"], ok["exit_status"], ok["error"]) == ("ok", 0, ""), ok
    assert ok["output"][0].startswith("GPU 0: NVIDIA A100"), ok["output"]  # the host's nvidia-smi
    assert len(ok["gpus"]) == 1 and ok["seconds"] > 0
    # The run's session is metered while its GPUs are leased: a little longer than the command.
    assert 2.5 * ok["seconds"] / 3600 - 2e-5 <= ok["measured_cost"]
    assert ok["measured_cost"] <= 2.5 * (ok["seconds"] + 10) / 3600
    assert ok["rtt_ms"] is not None and ok["rtt_ms"] > 0

    assert (failed["status"], failed["exit_status"]) == ("failed", 3), failed
    assert failed["error"] == "no CUDA here" and failed["seconds"] > 0
    assert failed["rtt_ms"] is not None and failed["rtt_ms"] >= MY_RTT_MS * 0.9  # the proxy's
    assert ok["rtt_ms"] < failed["rtt_ms"]  # loopback against 40 ms more
    assert failed["seconds"] >= MY_RTT_MS / 1000  # at least one round trip there

    assert denied["status"] == "denied" and denied["error"].startswith("denied: "), denied
    assert "recorded" in denied["error"]
    assert (denied["exit_status"], denied["rtt_ms"], denied["gpus"]) == (None, None, [])
    assert denied["seconds"] == 0 and denied["measured_cost"] == 0

    for h in hosts.values():  # the prediction stands beside the measurement
        assert h["predicted_cost"] == pytest.approx(2.5) and h["predicted_latency_ms"] > 0

    events = {e["host"]: e for e in env.stack.audit_events("placement.golden")[before:]}
    assert set(events) == {"sg-1", "my-1", "ae-1"}
    assert all(e["user"] == "gina" and e["command"] == SPLIT for e in events.values())
    assert events["sg-1"]["account"] == events["my-1"]["account"] == "root"  # the role's
    assert events["sg-1"]["result"] == "ok" and events["sg-1"]["exit_status"] == 0
    assert events["sg-1"]["cost"] == ok["measured_cost"] and events["sg-1"]["duration_s"] > 0
    assert events["my-1"]["result"] == "failed" and events["my-1"]["exit_status"] == 3
    assert events["ae-1"]["result"] == "denied" and events["ae-1"]["exit_status"] is None

    # The GPUs were leased for the run only.
    listing = json.loads(gina.gpuhop("hosts", "--json").stdout)
    assert all(h["gpus_free"] == h["gpus_total"] for h in listing), listing

    table = gina.gpuhop("pick", "--golden", "--", SPLIT)
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("golden test: ")
    for text in ("RTT", "RESULT", " ok ", "failed (3)", "denied", "no CUDA here"):
        assert text in table.stdout, (text, table.stdout)


def test_a_command_past_its_timeout_is_reported_and_killed_on_the_host(rita: Client) -> None:
    marker = "sleep 7.31"  # unique on this machine: pgrep finds only this job
    result = rita.gpuhop("pick", "--golden", "--top", "1", "--timeout", "1", "--json", "--", marker)
    assert result.returncode == 1, result.stderr  # no host ran it successfully
    [host] = json.loads(result.stdout)["hosts"]
    assert host["status"] == "timeout" and host["error"] == "no exit after 1 s", host
    assert 1 <= host["seconds"] < 5
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _running(marker):
        time.sleep(0.1)
    assert not _running(marker), "the timed-out command still runs on the host"


def _running(pattern: str) -> bool:
    found = subprocess.run(["pgrep", "-f", f"^{pattern}"], capture_output=True, text=True)
    return bool(found.stdout.strip())


def test_weights_choose_the_candidates_as_pick_does(env: Env) -> None:
    token = env.token("rita")
    body = {"gpus": 1, "top": 1, "command": "true", "w_cost": 1, "w_latency": 0, "w_sync": 0}
    [host] = post(env, token, body).json()["hosts"]
    # Ranked on cost alone, equal prices tie by name: ae-1 (not the nearest host).
    assert (host["name"], host["status"]) == ("ae-1", "ok")


def test_a_spent_budget_refuses_every_host(env: Env) -> None:
    response = post(env, env.token("spent"), {"gpus": 1, "top": 3, "command": "true"})
    assert response.status_code == 200, response.text
    hosts = response.json()["hosts"]
    assert len(hosts) == 3
    for h in hosts:
        assert h["status"] == "denied" and "daily budget" in h["error"], h


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"top": 0}, 422, "invalid_request"),
        ({"top": 9}, 422, "invalid_request"),
        ({"timeout_s": 0}, 422, "invalid_request"),
        ({"command": ""}, 422, "invalid_request"),
        ({"surprise": 1}, 422, "invalid_request"),
        ({"w_cost": 0, "w_latency": 0, "w_sync": 0}, 422, "bad_constraints"),
        ({"data": "nowhere"}, 404, "unknown_dataset"),
    ],
)
def test_bad_requests_get_one_clear_error(
    env: Env, body: dict[str, Any], status: int, code: str
) -> None:
    response = post(env, env.token("gina"), body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_no_token_is_401(env: Env) -> None:
    with httpx.Client(base_url=env.url, timeout=30) as api:
        assert api.post("/v1/placement/golden", json={}).status_code == 401


def test_bad_cli_input_is_one_line_and_an_exit_code(gina: Client) -> None:
    for args, code, text in [
        (("--top", "0"), 2, "--top"),
        (("--timeout", "0"), 2, "--timeout"),
        (("--weights", "0,0,0"), 1, "weights must be non-negative numbers, not all zero"),
    ]:
        result = gina.gpuhop("pick", "--golden", *args)
        assert result.returncode == code, (args, result.stderr)
        assert text in result.stderr and "Traceback" not in result.stderr, result.stderr
    weights = gina.gpuhop("pick", "--golden", "--weights", "0,0,0")
    assert len(weights.stderr.strip().splitlines()) == 1, weights.stderr
