"""OpenSSH through the gateway in passthrough mode: ``ssh -J``, scp, refusals, audit."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.gwstack import GatewayStack
from tests.integration.gwstack import read_until as _read_until

pytestmark = pytest.mark.openssh


@pytest.mark.parametrize("host", ["sg-1", "my-1"])
@pytest.mark.parametrize(
    ("command", "code"),
    [("true", 0), ("exit 1", 1), ("exit 137", 137), ("sh -c 'kill -9 $$'; exit $?", 137)],
)
def test_exec_exit_codes_exact(stack: GatewayStack, host: str, command: str, code: int) -> None:
    result = stack.run(stack.jump_command(stack.users["alice"], host, command))
    assert result.returncode == code, result.stderr.decode()


def test_signal_death_reported_as_direct_ssh_reports_it(stack: GatewayStack) -> None:
    """A command killed by a signal: the jump changes nothing OpenSSH would show."""
    alice = stack.users["alice"]
    cmd = "exec sh -c 'kill -9 $$'"
    via_gateway = stack.run(stack.jump_command(alice, "sg-1", cmd))
    port = str(stack.hosts["sg-1"].port)
    direct = stack.run(
        ["ssh", "-F", str(stack.ssh_config(alice)), "-p", port, "-T", "root@127.0.0.1", cmd]
    )
    assert (via_gateway.returncode, via_gateway.stdout) == (direct.returncode, direct.stdout)


def test_stdout_and_stderr_stay_separate(stack: GatewayStack) -> None:
    result = stack.run(
        stack.jump_command(stack.users["alice"], "sg-1", "echo out; echo err >&2; exit 3")
    )
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")


def test_fake_gpus_visible_on_host(stack: GatewayStack) -> None:
    cmd = "nvidia-smi --query-gpu=index,name --format=csv,noheader"
    result = stack.run(stack.jump_command(stack.users["alice"], "my-1", cmd))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.decode().strip().splitlines()) == 4


def test_interactive_shell_in_a_pty(stack: GatewayStack) -> None:
    cmd = stack.jump_command(stack.users["alice"], "sg-1", tty=True)
    pid, fd = pty.fork()
    if pid == 0:  # child: become ssh
        os.execvp(cmd[0], cmd)
    try:
        assert b"# " in _read_until(fd, b"# ")  # the prompt: readline drops typeahead
        os.write(fd, b"echo ready-$((6*7))\n")
        assert b"ready-42" in _read_until(fd, b"ready-42")
        os.write(fd, b"stty size; exit 5\n")
        _read_until(fd, b"\x00", timeout=5)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 5
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_scp_10mb_both_ways(stack: GatewayStack, tmp_path: Path) -> None:
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(10 * 1024 * 1024))
    user = stack.users["alice"]
    cfg = str(stack.ssh_config(user))
    remote = f"/tmp/gpuhop-scp-{os.getpid()}.bin"
    up = stack.run(["scp", "-F", cfg, "-J", "gw", "-q", str(src), f"root@sg-1:{remote}"], 60)
    assert up.returncode == 0, up.stderr
    back = tmp_path / "down.bin"
    down = stack.run(["scp", "-F", cfg, "-J", "gw", "-q", f"root@sg-1:{remote}", str(back)], 60)
    assert down.returncode == 0, down.stderr
    assert _sha256(back) == _sha256(src)
    stack.run(stack.jump_command(user, "sg-1", f"rm -f {remote}"))
    ends = [e for e in stack.audit_events("session.end") if e["user"] == "alice"]
    assert any(e["bytes_up"] > 10 * 1024 * 1024 for e in ends)
    assert any(e["bytes_down"] > 10 * 1024 * 1024 for e in ends)


def test_session_start_and_end_are_audited(stack: GatewayStack) -> None:
    mark = _last_id(stack)
    result = stack.run(stack.jump_command(stack.users["alice"], "my-1", "echo hi"))
    assert result.returncode == 0
    starts = [e for e in _latest(stack, "session.start", mark) if e["host"] == "my-1"]
    assert len(starts) == 1
    start = starts[0]
    deadline = time.monotonic() + 5
    ends: list[dict[str, object]] = []
    while not ends and time.monotonic() < deadline:
        ends = [
            e for e in stack.audit_events("session.end") if e["session_id"] == start["session_id"]
        ]
        time.sleep(0.05)
    assert len(ends) == 1
    end = ends[0]
    for event in (start, end):
        assert event["user"] == "alice"
        assert event["host"] == "my-1"
        assert event["mode"] == "passthrough"
        assert str(event["cert_id"]).startswith("gpuhop:alice:")
        assert str(event["source"]).startswith("127.0.0.1:")
    assert int(end["bytes_up"]) > 0 and int(end["bytes_down"]) > 0  # type: ignore[call-overload]
    assert float(end["duration_s"]) > 0  # type: ignore[arg-type]


def _latest(stack: GatewayStack, kind: str, after: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        events = [e for e in stack.audit_events(kind) if int(e["id"]) > after]
        if events:
            return events
        time.sleep(0.05)
    return []


def _last_id(stack: GatewayStack) -> int:
    events = stack.audit_events()
    return int(events[-1]["id"]) if events else 0


def test_unregistered_key_refused_and_audited(stack: GatewayStack) -> None:
    mark = _last_id(stack)
    result = stack.run(stack.gateway_command(stack.users["mallory"], "true"))
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr
    fails = _latest(stack, "auth.fail", mark)
    assert fails and fails[0]["user"] == "mallory"
    assert "unknown user" in str(fails[0]["reasons"])


def test_registered_user_with_wrong_key_refused(stack: GatewayStack) -> None:
    mark = _last_id(stack)
    mallory = stack.users["mallory"]
    cmd = stack.gateway_command(mallory, "true")
    cmd[cmd.index("mallory@127.0.0.1")] = "carol@127.0.0.1"
    result = stack.run(cmd)
    assert result.returncode == 255
    fails = _latest(stack, "auth.fail", mark)
    assert fails and "not registered to carol" in str(fails[0]["reasons"])


def _cert_for(stack: GatewayStack, name: str, tmp_path: Path, **sign: object) -> Path:
    from gateway.adapters.keys import ensure_private_key

    key = ensure_private_key(stack.users[name].key, "")
    issued = stack.ca().sign(key, user=str(sign.pop("as_user", name)), accounts=["root"], **sign)  # type: ignore[arg-type]
    path = tmp_path / f"{name}-special-cert.pub"
    path.write_text(issued.openssh_line() + "\n")
    return path


def test_expired_certificate_refused_and_audited(stack: GatewayStack, tmp_path: Path) -> None:
    cert = _cert_for(stack, "alice", tmp_path, validity_s=60, now=time.time() - 7200)
    alice = stack.users["alice"]
    mark = _last_id(stack)
    cmd = stack.gateway_command(alice, "true")
    cmd[cmd.index(f"CertificateFile={alice.cert}")] = f"CertificateFile={cert}"
    result = stack.run(cmd)
    assert result.returncode == 255
    fails = _latest(stack, "auth.fail", mark)
    assert fails and "expired" in str(fails[0]["reasons"])


def test_certificate_for_another_user_refused(stack: GatewayStack, tmp_path: Path) -> None:
    # bob's key, certified for bob, presented as alice: wrong principal.
    bob = stack.users["bob"]
    mark = _last_id(stack)
    cmd = stack.gateway_command(bob, "true")
    cmd[cmd.index("bob@127.0.0.1")] = "alice@127.0.0.1"
    result = stack.run(cmd)
    assert result.returncode == 255
    fails = _latest(stack, "auth.fail", mark)
    assert fails and "principal" in str(fails[0]["reasons"])


def test_policy_denies_host_outside_role(stack: GatewayStack) -> None:
    mark = _last_id(stack)
    result = stack.run(stack.jump_command(stack.users["bob"], "my-1", "true"))
    assert result.returncode == 255
    assert b"administratively prohibited" in result.stderr
    denies = _latest(stack, "channel.deny", mark)
    assert denies and denies[0]["user"] == "bob" and denies[0]["host"] == "my-1"
    assert "my-1" in str(denies[0]["reason"])
    ok = stack.run(stack.jump_command(stack.users["bob"], "sg-1", "true"))
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    "dest",
    [
        "unknown-host:22",
        "127.0.0.1:{free}",
        "127.0.0.1:{gateway}",
        "127.0.0.2:{sg}",
        "sg-1:2222",
        "localhost:{sg}",
        "127.1:{sg}",
    ],
)
def test_no_open_proxy(stack: GatewayStack, dest: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    target = dest.format(free=free, gateway=stack.port, sg=stack.host_addresses["sg-1"][1])
    mark = _last_id(stack)
    user = stack.users["alice"]
    cmd = ["ssh", "-F", str(stack.ssh_config(user)), "-W", target, "gw"]
    result = stack.run(cmd, input=b"")
    assert result.returncode != 0
    denies = _latest(stack, "channel.deny", mark)
    assert denies and denies[0]["dest"] == target


def test_menu_when_no_target(stack: GatewayStack) -> None:
    result = stack.run(stack.gateway_command(stack.users["bob"], "anything"))
    assert result.returncode == 0
    out = result.stdout.decode()
    assert "sg-1" in out and "my-1" not in out


def test_weak_algorithms_refused(stack: GatewayStack) -> None:
    user = stack.users["alice"]
    base = stack.gateway_command(user, "true")
    for opt in (
        ["-o", "KexAlgorithms=diffie-hellman-group14-sha1"],
        ["-o", "Ciphers=aes128-cbc"],
        ["-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-sha1"],
        ["-o", "HostKeyAlgorithms=ssh-rsa"],
    ):
        cmd = [base[0], *opt, *base[1:]]
        result = stack.run(cmd)
        assert result.returncode == 255, opt
        assert (
            b"no matching" in result.stderr.lower()
            or b"unable to negotiate" in result.stderr.lower()
        )


def test_fifty_concurrent_sessions(stack: GatewayStack) -> None:
    user = stack.users["alice"]

    def one(i: int) -> tuple[int, bytes]:
        host = "sg-1" if i % 2 else "my-1"
        r = stack.run(stack.jump_command(user, host, f"echo n{i}"), timeout=120)
        return r.returncode, r.stdout

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    assert [r[0] for r in results] == [0] * 50
    assert [r[1] for r in results] == [f"n{i}\n".encode() for i in range(50)]


def test_audit_verify_ok_and_detects_edit(stack: GatewayStack, tmp_path: Path) -> None:
    import shutil
    import sqlite3

    if stack.database_url.startswith("postgresql"):
        pytest.skip("edits the SQLite file; test_postgres covers tampering on PostgreSQL")
    # A session of its own, so the test does not depend on the others in this module.
    assert stack.run(stack.jump_command(stack.users["alice"], "sg-1", "true")).returncode == 0
    deadline = time.monotonic() + 5
    while not stack.audit_events("session.end") and time.monotonic() < deadline:
        time.sleep(0.05)

    ok = stack.run(
        [sys.executable, "-m", "gateway.cli", "audit", "verify", "--config", str(stack.config)]
    )
    assert ok.returncode == 0, ok.stderr
    assert b"audit chain ok" in ok.stdout
    copy = tmp_path / "copy.db"
    src = sqlite3.connect(stack.database)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    row = dst.execute("SELECT id FROM audit_events WHERE kind='session.end' LIMIT 1").fetchone()
    # Someone with write access to the file can drop the guard trigger; the chain still tells.
    dst.execute("DROP TRIGGER audit_events_no_update")
    dst.execute(
        "UPDATE audit_events SET data = replace(data, '\"alice\"', '\"eve\"') WHERE id = ?", row
    )
    dst.commit()
    dst.close()
    bad = stack.run(
        [sys.executable, "-m", "gateway.cli", "audit", "verify", "--database", str(copy)]
    )
    assert bad.returncode != 0
    err = bad.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and f"event {row[0]}" in err
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_sigterm_drains_live_session(fresh_stack: GatewayStack) -> None:
    fresh_stack.start_gateway()
    user = fresh_stack.users["alice"]
    proc = subprocess.Popen(
        fresh_stack.jump_command(user, "sg-1", "sleep 2; echo done"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)
    assert fresh_stack.proc is not None
    started = time.monotonic()
    code = fresh_stack.stop_gateway()
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out == b"done\n"
    assert code == 0
    assert time.monotonic() - started < 6
    kinds = [e["kind"] for e in fresh_stack.audit_events()]
    assert kinds[-1] == "gateway.stop"
    assert "session.end" in kinds


def test_kill_9_keeps_committed_events(fresh_stack: GatewayStack) -> None:
    fresh_stack.start_gateway()
    user = fresh_stack.users["alice"]
    for _ in range(3):
        assert fresh_stack.run(fresh_stack.jump_command(user, "sg-1", "true")).returncode == 0
    proc = subprocess.Popen(
        fresh_stack.jump_command(user, "my-1", "sleep 30"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    fresh_stack.wait_audit_events("session.start", lambda e: e["host"] == "my-1")
    before = fresh_stack.audit_events()
    assert fresh_stack.proc is not None
    fresh_stack.proc.kill()
    fresh_stack.proc.wait()
    fresh_stack.proc = None
    proc.wait(timeout=30)
    assert proc.returncode == 255  # the user's ssh sees the gateway vanish
    fresh_stack.start_gateway()
    after = fresh_stack.audit_events()
    assert after[: len(before)] == before
    assert fresh_stack.run(fresh_stack.jump_command(user, "sg-1", "true")).returncode == 0
    verify = fresh_stack.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "audit",
            "verify",
            "--database",
            fresh_stack.database_url,
        ]
    )
    assert verify.returncode == 0, verify.stderr


def test_failed_logins_are_rate_limited(tmp_path: Path) -> None:
    from tests.integration.conftest import build_stack

    s = build_stack(tmp_path, extra_gateway="")
    s.config.write_text(
        s.config.read_text().replace("auth_max_failures = 50", "auth_max_failures = 3")
    )
    try:
        s.start_gateway()
        for _ in range(4):
            assert s.run(s.gateway_command(s.users["mallory"], "true")).returncode == 255
        assert s.wait_audit_events("auth.ratelimited")  # audited just after the refusal
        # Under the ban mallory's failures are counted, not audited one by one...
        assert len(s.wait_audit_events("auth.fail", count=4, timeout=1.0)) == 3
        # ...and a ban never refuses a valid credential: alice still gets in from there.
        result = s.run(s.gateway_command(s.users["alice"], "true"))
        assert result.returncode == 0, result.stderr.decode()
    finally:
        s.close()


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[gateway]\nssh_port = 70000\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    err = result.stderr.decode().strip()
    assert len(err.splitlines()) == 1
    assert "bad.toml" in err and "ssh_port" in err
