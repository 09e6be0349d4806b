"""``gpuhop demo --detach``: everything comes up, is reachable with plain ssh, and goes away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.openssh, pytest.mark.slow]


def _gpuhop(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_demo_detach_connect_stop(tmp_path: Path) -> None:
    from tests.integration.conftest import need_openssh

    need_openssh()
    state = tmp_path / "demo"
    started = _gpuhop("demo", "--detach", "--state-dir", str(state))
    assert started.returncode == 0, started.stderr
    info = json.loads((state / "demo.json").read_text())
    try:
        for key in ("ssh_host", "ssh_port", "user", "identity_file", "ssh_config", "database"):
            assert info[key]
        hosts = {h["name"]: h for h in info["hosts"]}
        assert {h["region"] for h in hosts.values()} == {"sg", "my", "ae"}
        assert sorted(h["injected_rtt_ms"] for h in hosts.values()) == [35, 45, 120]
        result = subprocess.run(
            [
                "ssh",
                "-F",
                info["ssh_config"],
                "sg-a100-1",
                "nvidia-smi --query-gpu=name --format=csv,noheader | wc -l",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "8"
        # Everything the demo writes stays under its state directory.
        assert Path(info["database"]).is_relative_to(state)
        assert Path(info["identity_file"]).is_relative_to(state)
    finally:
        stopped = _gpuhop("demo", "stop", "--state-dir", str(state))
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + 10
    while _alive(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(info["pid"])
    leftover = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "demo left processes behind"
    verify = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "verify", "--database", info["database"]],
        capture_output=True,
        timeout=60,
    )
    assert verify.returncode == 0
