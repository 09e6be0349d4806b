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
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sim.delayproxy import ThreadedDelayProxy
from gateway.ssh.envprotocol import stage_key
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
env_push_spool_ahead_mib = 4"""
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
        stack.add_user("rita")
        stack.add_user("eve")
        stack.write_config(ROLES, {"rita": ["rec"], "eve": ["rec"]})
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
    return {k: v for k, _, v in pairs if k != "GPUHOP_FAKE_GPUS"}  # the host's own marker


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
