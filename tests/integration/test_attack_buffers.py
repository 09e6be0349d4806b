"""Attacks on the gateway's buffers, its GPU environment and golden runs, with real clients.

Each test drives a real client (OpenSSH ``ssh``, httpx) against the real gateway
subprocess of :class:`~tests.integration.gwstack.GatewayStack` and checks a promise
that a hostile user would try to break: memory stays bounded whatever the client
sends, the GPU environment on the host is the gateway's, and golden runs are
sessions like any other.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import need_openssh
from tests.integration.gwstack import GatewayStack

pytestmark = pytest.mark.openssh

MIB = 1024 * 1024

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
    stack = GatewayStack(tmp_path_factory.mktemp("attack-buffers"))
    stack.ca()
    try:
        stack.add_host("sg-1")
        stack.add_host("my-1")
        stack.add_user("rita")
        stack.add_user("eve")
        stack.write_config(ROLES, {"rita": ["rec"], "eve": ["rec"]})
        stack.start_gateway()
        yield stack
    finally:
        stack.close()


def _direct(stack: GatewayStack, user: str, host: str, command: str, *opts: str) -> list[str]:
    cfg = str(stack.ssh_config(stack.users[user]))
    return ["ssh", "-F", cfg, *opts, "-T", f"{user}+{host}@gw", command]


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
