"""Rotating the user CA while sessions run: nothing live drops, old certificates keep working."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.gwstack import GatewayStack

pytestmark = pytest.mark.openssh


def _gw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_user_ca_rotation_keeps_live_and_old(fresh_stack: GatewayStack, tmp_path: Path) -> None:
    stack = fresh_stack
    stack.start_gateway()
    rita = stack.users["rita"]
    direct = ["ssh", "-F", str(stack.ssh_config(rita)), "-T", "rita+sg-1@gw"]
    live = subprocess.Popen([*direct, "sleep 4; echo survived"], stdout=subprocess.PIPE)
    time.sleep(1.5)
    assert stack.proc is not None
    rotated = _gw(
        "ca", "rotate", "user", "--config", str(stack.config), "--pid", str(stack.proc.pid)
    )
    assert rotated.returncode == 0, rotated.stderr
    trusted = rotated.stdout.strip().splitlines()
    assert len(trusted) == 2  # the new CA first, then the one rotated out
    for host in stack.hosts.values():  # hosts trust both while old certificates live
        (host.directory / "user_ca.pub").write_text("\n".join(trusted) + "\n")
    time.sleep(0.5)
    out, _ = live.communicate(timeout=30)
    assert live.returncode == 0 and out == b"survived\n"
    # A certificate from the old CA still logs in, through the gateway and on to the host.
    old = stack.run([*direct, "echo old-cert"])
    assert old.returncode == 0, old.stderr
    # New certificates come from the new CA.
    signed = _gw(
        "ca",
        "sign",
        "--config",
        str(stack.config),
        "--user",
        "rita",
        "--pubkey",
        str(rita.key) + ".pub",
        "--out",
        str(tmp_path / "new-cert.pub"),
    )
    assert signed.returncode == 0, signed.stderr
    info = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(tmp_path / "new-cert.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    new_ca_fp = subprocess.run(
        ["ssh-keygen", "-l", "-f", "/dev/stdin"],
        input=trusted[0],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert new_ca_fp in info
    rita.cert = tmp_path / "new-cert.pub"
    fresh = stack.run(["ssh", "-F", str(stack.ssh_config(rita)), "-T", "rita+my-1@gw", "echo new"])
    assert fresh.returncode == 0, fresh.stderr
    assert stack.audit_events("gateway.keys_reloaded")
