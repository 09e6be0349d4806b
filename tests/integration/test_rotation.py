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
    # Hosts trust both while old certificates live, and the gateway's upstream CA as before.
    lines = [*trusted, stack.upstream_ca().public_line]
    for host in stack.hosts.values():
        (host.directory / "user_ca.pub").write_text("\n".join(lines) + "\n")
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


def _blob(line: str) -> str:
    return line.split()[1]


def _wait_reloads(stack: GatewayStack, count: int) -> list[dict[str, object]]:
    events = stack.wait_audit_events("gateway.keys_reloaded", count=count)
    assert len(events) >= count, events
    return events


def test_gateway_host_key_rotation_is_learned_first_and_drops_nothing_live(
    fresh_stack: GatewayStack, tmp_path: Path
) -> None:
    """Stage: clients learn the next key (UpdateHostKeys). Promote: new connections
    use it, live sessions keep theirs, a client that never learned it is refused."""
    stack = fresh_stack
    stack.start_gateway()
    assert stack.proc is not None
    rita = stack.users["rita"]
    old_line = (stack.root / "keys" / "gateway_host_ed25519.pub").read_text().strip()
    learner = tmp_path / "known_hosts.learner"  # a client that lets OpenSSH update it
    stale = tmp_path / "known_hosts.stale"  # one that never connects while the key is staged
    gw = f"[127.0.0.1]:{stack.port}"
    for path in (learner, stale):
        path.write_text(f"{gw} {old_line}\n")

    def ssh(known: Path, command: str, update: bool = True) -> list[str]:
        opts = [o.replace(str(stack.known_hosts), str(known)) for o in stack.ssh_options(rita)]
        learn = f"UpdateHostKeys={'yes' if update else 'no'}"
        return ["ssh", "-F", "/dev/null", *opts, "-o", learn,
                "-p", str(stack.port), "-T", "rita+sg-1@127.0.0.1", command]  # fmt: skip

    staged = _gw("hostkey", "stage", "--config", str(stack.config), "--pid", str(stack.proc.pid))
    assert staged.returncode == 0, staged.stderr
    current, upcoming = staged.stdout.strip().splitlines()
    assert _blob(current) == _blob(old_line) != _blob(upcoming)
    reloaded = _wait_reloads(stack, 1)
    assert [_blob(k) for k in reloaded[-1]["host_keys"]] == [_blob(current), _blob(upcoming)]  # type: ignore[union-attr]
    shown = _gw("hostkey", "show", "--config", str(stack.config))
    assert [_blob(k) for k in shown.stdout.split("\n") if k] == [_blob(current), _blob(upcoming)]

    first = stack.run(ssh(learner, "echo hi"))
    assert first.returncode == 0 and first.stdout == b"hi\n", first.stderr
    assert _blob(upcoming) in learner.read_text()  # learned before it is ever used

    live = subprocess.Popen(
        ssh(stale, "sleep 4; echo survived", update=False), stdout=subprocess.PIPE
    )
    time.sleep(1.5)
    promoted = _gw(
        "hostkey", "promote", "--config", str(stack.config), "--pid", str(stack.proc.pid)
    )
    assert promoted.returncode == 0, promoted.stderr
    assert _blob(promoted.stdout.strip()) == _blob(upcoming)
    assert [_blob(k) for k in _wait_reloads(stack, 2)[-1]["host_keys"]] == [_blob(upcoming)]  # type: ignore[union-attr]

    out, _ = live.communicate(timeout=30)
    assert live.returncode == 0 and out == b"survived\n"  # its key exchange stands
    again = stack.run(ssh(learner, "echo again"))
    assert again.returncode == 0 and again.stdout == b"again\n", again.stderr
    assert _blob(old_line) not in learner.read_text()  # the retired key is forgotten
    refused = stack.run(ssh(stale, "echo never", update=False))
    assert refused.returncode == 255
    assert b"REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr

    no_more = _gw("hostkey", "promote", "--config", str(stack.config))
    assert no_more.returncode != 0
    assert "no staged host key" in no_more.stderr and no_more.stderr.count("\n") == 1
