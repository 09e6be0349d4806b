"""Attacks on the gateway's buffers, its GPU environment and golden runs, with real clients.

Each test drives a real client (OpenSSH ``ssh``, httpx) against the real gateway
subprocess of :class:`~tests.integration.gwstack.GatewayStack` and checks a promise
that a hostile user would try to break: memory stays bounded whatever the client
sends, the GPU environment on the host is the gateway's, and golden runs are
sessions like any other.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.services.envprotocol import stage_key
from gpuhop_sim.delayproxy import ThreadedDelayProxy
from tests.integration.conftest import need_openssh
from tests.integration.gwstack import GatewayStack

pytestmark = pytest.mark.openssh

MIB = 1024 * 1024

FAR_RTT_MS = 300.0
# Every push is staged (spooled here, sent in chunks); the spool may run 4 MiB ahead.
STAGING = """env_push_min_rtt_ms = 0.0
env_push_connections = 1
env_push_streams_per_connection = 2
env_push_chunk_mib = 1
env_push_spool_ahead_mib = 4
golden_max_running = 2
golden_max_s = 30.0"""
# ae-1's docker: a load that takes whatever it is given (the others have no dockerd).
FAKE_DOCKER = """#!/bin/sh
case "$1" in load) exec cat >/dev/null;; esac
echo "fake docker: $1 unsupported" >&2; exit 1
"""
IMAGE_ID = "sha256:" + "ab" * 32

ROLES = """
[[roles]]
name = "rec"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]
max_gpus = 4

[[roles]]
name = "rec-ci"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]
max_gpus = 4
ci_golden = true

[[budgets]]
user = "bud"
daily = 0.001
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    need_openssh()
    stack = GatewayStack(tmp_path_factory.mktemp("attack-buffers"), extra_gateway=STAGING)
    stack.ca()
    proxy: ThreadedDelayProxy | None = None
    try:
        stack.add_host("sg-1")
        stack.add_host("my-1")
        far = stack.add_host("ae-1")
        docker = far.files.bin / "docker"
        docker.write_text(FAKE_DOCKER)
        docker.chmod(0o755)
        proxy = ThreadedDelayProxy("127.0.0.1", far.port, FAR_RTT_MS).start()
        stack.host_addresses["ae-1"] = ("127.0.0.1", proxy.port)
        for user in ("rita", "eve", "cinda", "bud"):
            stack.add_user(user)
        stack.write_config(
            ROLES, {"rita": ["rec"], "eve": ["rec"], "cinda": ["rec-ci"], "bud": ["rec"]}
        )
        stack.start_gateway(timeout=60)  # the machine is shared: allow a slow start
        yield stack
    finally:
        stack.close()
        if proxy is not None:
            proxy.stop()


def _direct(stack: GatewayStack, user: str, host: str, command: str, *opts: str) -> list[str]:
    cfg = str(stack.ssh_config(stack.users[user]))
    return ["ssh", "-F", cfg, *opts, "-T", f"{user}+{host}@gw", command]


class Feeder:
    """Writes ``total`` bytes of zeros into a real ``ssh``'s stdin from a thread, counting
    what it got rid of: a client the gateway holds back stops early."""

    def __init__(self, cmd: list[str], total: int) -> None:
        self.total, self.sent = total, 0
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        chunk = b"\0" * MIB
        stdin = self.proc.stdin
        assert stdin is not None
        with contextlib.suppress(OSError, ValueError):
            while self.sent < self.total:
                stdin.write(chunk)
                self.sent += len(chunk)
            stdin.close()

    def wait(self, timeout: float) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.proc.wait(timeout)
        return None

    def finish(self) -> tuple[bytes, bytes]:
        self.proc.kill()
        self._thread.join(10)
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.stdin = None  # closed above: communicate() must not flush it
        out, err = self.proc.communicate(timeout=10)
        return out, err


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# -- early channel data: a recorded exec that never reads --


def test_data_piped_into_a_command_that_never_reads_costs_bounded_memory(
    gw: GatewayStack,
) -> None:
    """512 MiB piped into ``ssh gw HOST 'sleep 30'`` must not end up in the gateway's memory:
    the host's full window pauses the user's channel, also when it filled while the host's
    channel was still opening."""
    assert gw.proc is not None
    pid = gw.proc.pid
    assert gw.run(_direct(gw, "rita", "sg-1", "true")).returncode == 0  # warm: pool, imports
    time.sleep(0.5)
    before = _rss_kib(pid)
    total = 512 * MIB
    sent = [0]
    proc = subprocess.Popen(
        _direct(gw, "rita", "sg-1", "sleep 30"),
        stdin=subprocess.PIPE,
        bufsize=0,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def feed() -> None:
        chunk = b"\0" * MIB
        assert proc.stdin is not None
        try:
            while sent[0] < total:
                proc.stdin.write(chunk)
                sent[0] += len(chunk)
            proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    peak = before
    deadline = time.monotonic() + 12.0
    try:
        while time.monotonic() < deadline and sent[0] < total:
            peak = max(peak, _rss_kib(pid))
            time.sleep(0.05)
        for _ in range(20):  # what the gateway took in by now has landed
            peak = max(peak, _rss_kib(pid))
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(10)
        writer.join(10)
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
    grown_mib = (peak - before) / 1024
    print(
        f"gateway RSS {before / 1024:.1f} MiB -> peak {peak / 1024:.1f} MiB; "
        f"client wrote {sent[0] / MIB:.0f} MiB into ssh"
    )
    assert grown_mib <= 64, f"gateway grew {grown_mib:.0f} MiB for {sent[0] / MIB:.0f} MiB sent"
    assert sent[0] < total, "the client was never held back"


# -- the GPU environment is the gateway's --

PRINT_GPU_ENV = "env | grep -E '^(CUDA_|GPUHOP_|NVIDIA_)' | sort"


def _gpu_env(out: bytes) -> dict[str, str]:
    pairs = (line.partition("=") for line in out.decode().splitlines() if "=" in line)
    host_own = {"GPUHOP_FAKE_GPUS", "GPUHOP_KRL"}  # set by the simulated host itself
    return {k: v for k, _, v in pairs if k not in host_own}


def test_client_sent_cuda_env_never_reaches_the_host(gw: GatewayStack) -> None:
    """A session that asked for no GPU sees none, whatever it sends with SetEnv."""
    setenv = "-oSetEnv=CUDA_VISIBLE_DEVICES=0,1,2,3 CUDA_DEVICE_ORDER=FASTEST_FIRST GPUHOP_X=1"
    result = gw.run(_direct(gw, "eve", "sg-1", PRINT_GPU_ENV, setenv))
    assert result.returncode == 0, result.stderr
    assert _gpu_env(result.stdout) == {"CUDA_VISIBLE_DEVICES": ""}


def test_sendenv_cuda_is_dropped_too(gw: GatewayStack) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "1,2", "CUDA_DEVICE_ORDER": "FASTEST_FIRST"}
    cmd = _direct(gw, "eve", "my-1", PRINT_GPU_ENV, "-oSendEnv=CUDA_*")
    result = gw.run(cmd, env=env)
    assert result.returncode == 0, result.stderr
    assert _gpu_env(result.stdout) == {"CUDA_VISIBLE_DEVICES": ""}


def test_leased_gpus_of_another_session_cannot_be_claimed(gw: GatewayStack) -> None:
    """rita holds GPUs 0,1 on sg-1; eve names them, asking for none and then for one:
    she gets none, then one of her own, never rita's and never for free."""
    holder = subprocess.Popen(
        _direct(
            gw, "rita", "sg-1", "echo got=$CUDA_VISIBLE_DEVICES; sleep 30", "-oSetEnv=GPUHOP_GPUS=2"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"got=0,1"
        free_ride = gw.run(
            _direct(gw, "eve", "sg-1", PRINT_GPU_ENV, "-oSetEnv=CUDA_VISIBLE_DEVICES=0,1")
        )
        assert free_ride.returncode == 0, free_ride.stderr
        assert _gpu_env(free_ride.stdout) == {"CUDA_VISIBLE_DEVICES": ""}
        setenv = "-oSetEnv=GPUHOP_GPUS=1 CUDA_VISIBLE_DEVICES=0,1"
        result = gw.run(_direct(gw, "eve", "sg-1", PRINT_GPU_ENV, setenv))
        assert result.returncode == 0, result.stderr
        assert _gpu_env(result.stdout) == {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": "2",
            "GPUHOP_GPUS": "1",
        }
    finally:
        holder.kill()
        holder.communicate(timeout=10)


# -- environment pushes: the tee, the spool --


def _push(stack: GatewayStack, *hosts: str) -> list[str]:
    cfg = str(stack.ssh_config(stack.users["rita"]))
    return ["ssh", "-F", cfg, "-T", "gw", "gpuhop-env", "load", "t/x:1", IMAGE_ID, *hosts]


def test_a_push_whose_every_host_failed_stops_reading_and_says_so(gw: GatewayStack) -> None:
    """Neither host has a Docker engine: once both loads have died the gateway takes no
    more of the archive and ends the push with one line, long before the client is done."""
    feeder = Feeder(_push(gw, "sg-1", "my-1"), 256 * MIB)
    try:
        status = feeder.wait(30)
    finally:
        out, err = feeder.finish()
    assert status == 1, (status, err)
    lines = err.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpuhop-env: every host failed;"), err
    reply = json.loads(out)
    assert {h["status"] for h in reply["hosts"].values()} == {"failed"}, reply
    assert reply["bytes_received"] <= 32 * MIB, reply["bytes_received"]
    assert feeder.sent <= 64 * MIB, f"the client got rid of {feeder.sent / MIB:.0f} MiB"


def test_a_slow_far_host_holds_the_client_back(gw: GatewayStack) -> None:
    """ae-1 is 300 ms away and alive: the spool runs at most 4 MiB ahead of what ae-1 has
    taken whole, so the client is paced by the host, not by the gateway's disk."""
    staging = gw.hosts["ae-1"].files.home / ".cache/gpuhop/push" / stage_key(IMAGE_ID)
    feeder = Feeder(_push(gw, "ae-1"), 256 * MIB)
    try:
        time.sleep(8)
        sent = feeder.sent
        assert feeder.proc.poll() is None, feeder.proc.stderr
    finally:
        feeder.finish()
    ended = gw.wait_audit_events("env.push", lambda e: e["host"] == "ae-1")
    assert ended and ended[-1]["result"] == "aborted", ended
    taken = ended[-1]["bytes"]  # what the gateway read from the client
    # The chunks ae-1 has whole (a cut push keeps them for a retry).
    whole = sum(f.stat().st_size for f in staging.iterdir() if ".part" not in f.name)
    print(
        f"in 8 s to a host {FAR_RTT_MS:.0f} ms away: client wrote {sent / MIB:.0f} MiB,"
        f" gateway took {taken / MIB:.1f} MiB, host has {whole / MIB:.1f} MiB whole"
    )
    assert taken <= whole + 4 * MIB + 256 * 1024, "the spool ran past its 4 MiB"
    assert sent <= 128 * MIB, f"the client got rid of {sent / MIB:.0f} MiB in 8 s"


# -- golden runs are sessions --

_tokens: dict[tuple[str, str], str] = {}
NEAR = ("sg-1", "my-1")
GATEWAY_CLI = (sys.executable, "-m", "gateway.cli")


def _token(stack: GatewayStack, user: str, scope: str = "user") -> str:
    if (user, scope) not in _tokens:
        args = ["create", "--config", str(stack.config), "--user", user, "--scope", scope]
        _tokens[user, scope] = subprocess.run(
            [*GATEWAY_CLI, "token", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    return _tokens[user, scope]


def _api(stack: GatewayStack, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{stack.api_port}/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )


@pytest.fixture(scope="module")
def probed(gw: GatewayStack) -> GatewayStack:
    """The stack once the near hosts have a probed round trip (ranking needs one)."""
    deadline = time.monotonic() + 60
    hosts: list[dict[str, Any]] = []
    with _api(gw, _token(gw, "rita")) as api:
        while time.monotonic() < deadline:
            hosts = api.get("/hosts").json()
            if all(h["rtt_ms"] is not None for h in hosts if h["name"] in NEAR):
                return gw
            time.sleep(0.2)
    raise AssertionError(f"the probes never reported {NEAR}: {hosts}")


def _golden(stack: GatewayStack, token: str, command: str, **body: Any) -> httpx.Response:
    with _api(stack, token) as api:
        return api.post("/placement/golden", json={"gpus": 1, "top": 1, "command": command, **body})


def test_a_golden_run_is_a_metered_recorded_session(probed: GatewayStack) -> None:
    token = _token(probed, "rita")
    response = _golden(probed, token, "echo hello-golden; sleep 1")
    assert response.status_code == 200, response.text
    [host] = response.json()["hosts"]
    assert host["status"] == "ok", host
    sid = host["session_id"]
    assert sid, host
    ended = probed.wait_audit_events("session.end", lambda e: e["session_id"] == sid)
    assert ended and ended[0]["request"] == "golden" and ended[0]["gpus"] == 1, ended
    assert ended[0]["cost_usd"] == pytest.approx(host["measured_cost"]) and ended[0]["cost_usd"] > 0
    with _api(probed, token) as api:
        deadline = time.monotonic() + 10
        record = api.get(f"/sessions/{sid}").json()
        while record.get("cost_usd") is None and time.monotonic() < deadline:
            time.sleep(0.1)
            record = api.get(f"/sessions/{sid}").json()
        assert record["cost_usd"] == pytest.approx(host["measured_cost"]), record
        cast = api.get(f"/recordings/{sid}")
    assert cast.status_code == 200, cast.text
    header, *events = cast.text.splitlines()
    assert json.loads(header)["command"] == "echo hello-golden; sleep 1"
    assert "hello-golden" in "".join(json.loads(e)[2] for e in events)
    [start] = [e for e in probed.audit_events("session.start") if e["session_id"] == sid]
    assert (start["user"], start["request"], start["recording"]) == (
        "rita",
        "golden",
        f"{sid}.cast",
    )


def test_golden_runs_count_against_the_budget(probed: GatewayStack) -> None:
    """bud may spend $0.001 a day: a 2 s run on one GPU at $2.50/h costs more than that,
    so the next one is refused."""
    token = _token(probed, "bud")
    first = _golden(probed, token, "sleep 2")
    assert first.status_code == 200, first.text
    [host] = first.json()["hosts"]
    assert host["status"] == "ok" and host["measured_cost"] > 0.001, host
    second = _golden(probed, token, "true")
    [again] = second.json()["hosts"]
    assert again["status"] == "denied" and "daily budget" in again["error"], again


def test_a_golden_run_is_listed_live_and_the_kill_api_ends_it(probed: GatewayStack) -> None:
    marker = "sleep 41.7"  # unique on this machine: pgrep finds only this run
    token, admin = _token(probed, "eve"), _token(probed, "rita", "admin")
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(_golden, probed, token, marker, timeout_s=30)
        [sid] = _wait_live(probed, "eve", 1)
        with _api(probed, admin) as api:
            killed = api.post(f"/sessions/{sid}/kill")
            assert killed.status_code == 200, killed.text
        started = time.monotonic()
        response = running.result(timeout=30)
    assert time.monotonic() - started < 15
    [host] = response.json()["hosts"]
    assert (host["status"], host["session_id"]) == ("killed", sid), host
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _running(marker):
        time.sleep(0.1)
    assert not _running(marker), "the killed run still runs on the host"


def _running(pattern: str) -> bool:
    found = subprocess.run(["pgrep", "-f", f"^{pattern}"], capture_output=True, text=True)
    return bool(found.stdout.strip())


def test_golden_runs_are_capped_per_user(probed: GatewayStack) -> None:
    """At most 2 host runs at once (golden_max_running) and 30 s each (golden_max_s)."""
    token = _token(probed, "cinda")
    too_long = _golden(probed, token, "true", timeout_s=60)
    assert too_long.status_code == 422, too_long.text
    assert "at most 30 s" in too_long.json()["error"]["message"], too_long.json()
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(_golden, probed, token, "sleep 8", top=2, timeout_s=20)
        _wait_live(probed, "cinda", 2)
        third = _golden(probed, token, "true", gpus=0)
        assert third.status_code == 429, third.text
        assert "at most 2 at once" in third.json()["error"]["message"], third.json()
        done = busy.result(timeout=30)
    assert done.status_code == 200, done.text
    assert [h["status"] for h in done.json()["hosts"]] == ["ok", "ok"], done.json()


def _wait_live(stack: GatewayStack, user: str, count: int) -> list[str]:
    """The ids of ``user``'s live sessions, once there are ``count`` of them."""
    ids: list[str] = []
    with _api(stack, _token(stack, "rita", "admin")) as api:
        deadline = time.monotonic() + 20
        while len(ids) < count and time.monotonic() < deadline:
            live = api.get("/sessions", params={"live": "true", "user": user}).json()
            ids = [s["id"] for s in live["sessions"]]
            time.sleep(0.1)
    assert len(ids) >= count, f"{user} has {len(ids)} live session(s), not {count}"
    return ids


def test_a_ci_token_runs_golden_only_where_its_role_says_so(probed: GatewayStack) -> None:
    refused = _golden(probed, _token(probed, "rita", "ci"), "true", gpus=0)
    assert refused.status_code == 403, refused.text
    assert "ci_golden" in refused.json()["error"]["message"], refused.json()
    allowed = _golden(probed, _token(probed, "cinda", "ci"), "true", gpus=0)
    assert allowed.status_code == 200, allowed.text
    assert [h["status"] for h in allowed.json()["hosts"]] == ["ok"], allowed.json()
