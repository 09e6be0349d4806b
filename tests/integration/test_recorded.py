"""Recorded mode: the gateway terminates and re-originates sessions, and records them."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pty
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from tests.integration.gwstack import GatewayStack
from tests.integration.gwstack import read_until as _read_until

pytestmark = pytest.mark.openssh


def _wait_events(
    stack: GatewayStack, kind: str, pred: object = None, timeout: float = 10.0
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = [e for e in stack.audit_events(kind) if pred is None or pred(e)]  # type: ignore[operator]
        if events:
            return events
        time.sleep(0.05)
    return []


def _direct(
    stack: GatewayStack, user: str, host: str, *command: str, tty: bool = False
) -> list[str]:
    u = stack.users[user]
    return [
        "ssh",
        "-F",
        str(stack.ssh_config(u)),
        "-tt" if tty else "-T",
        f"{user}+{host}@gw",
        *command,
    ]


@pytest.mark.parametrize("form", ["jump", "direct"])
@pytest.mark.parametrize(
    ("command", "code"), [("true", 0), ("exit 1", 1), ("sh -c 'kill -9 $$'; exit $?", 137)]
)
def test_recorded_exec_exit_codes(stack: GatewayStack, form: str, command: str, code: int) -> None:
    cmd = (
        stack.jump_command(stack.users["rita"], "sg-1", command)
        if form == "jump"
        else _direct(stack, "rita", "sg-1", command)
    )
    result = stack.run(cmd)
    assert result.returncode == code, result.stderr


def test_recorded_stderr_separate_and_audited(stack: GatewayStack) -> None:
    result = stack.run(stack.jump_command(stack.users["rita"], "my-1", "echo out; echo err >&2"))
    assert (result.returncode, result.stdout, result.stderr) == (0, b"out\n", b"err\n")
    ends = _wait_events(
        stack,
        "session.end",
        lambda e: e["user"] == "rita" and e["command"] == "echo out; echo err >&2",
    )
    assert ends and ends[0]["mode"] == "recorded" and ends[0]["via"] == "jump"
    assert ends[0]["exit_status"] == 0 and ends[0]["account"] == "root"
    cast = stack.root / "recordings" / str(ends[0]["recording"])
    lines = cast.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2
    output = "".join(json.loads(line)[2] for line in lines[1:] if json.loads(line)[1] == "o")
    assert "out" in output and "err" in output


def test_host_logs_name_the_user(stack: GatewayStack) -> None:
    result = stack.run(_direct(stack, "rita", "sg-1", "true"))
    assert result.returncode == 0
    log = stack.hosts["sg-1"].log_path.read_text()
    assert 'ID "gpuhop:rita:' in log


def test_command_after_host_name(stack: GatewayStack) -> None:
    u = stack.users["rita"]
    cmd = ["ssh", "-F", str(stack.ssh_config(u)), "-T", "gw", "my-1", "echo", "via-word"]
    result = stack.run(cmd)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"via-word\n"


def test_recorded_denied_for_passthrough_only_role(stack: GatewayStack) -> None:
    result = stack.run(_direct(stack, "alice", "sg-1", "true"))
    assert result.returncode == 255
    assert result.stderr.startswith(b"gpuhop: denied: ") and b"recorded" in result.stderr


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@pytest.mark.parametrize("form", ["jump", "direct"])
def test_shell_with_pty_resize_and_recording(stack: GatewayStack, form: str) -> None:
    rita = stack.users["rita"]
    cmd = (
        stack.jump_command(rita, "sg-1", tty=True)
        if form == "jump"
        else _direct(stack, "rita", "sg-1", tty=True)
    )
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    try:
        _set_size(fd, 24, 80)
        assert b"# " in _read_until(fd, b"# ")  # the prompt: readline drops typeahead
        os.write(fd, b"stty size; echo marker-$((40+2))\n")
        first = _read_until(fd, b"marker-42")
        assert b"24 80" in first
        _set_size(fd, 40, 100)
        os.kill(pid, signal.SIGWINCH)
        time.sleep(0.5)
        os.write(fd, b"stty size; echo again-$((40+3))\n")
        second = _read_until(fd, b"again-43")
        assert b"40 100" in second
        os.write(fd, b"exit 3\n")
        _read_until(fd, b"\x00", timeout=5)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 3
    finally:
        os.close(fd)
    ends = _wait_events(
        stack, "session.end", lambda e: e["user"] == "rita" and e["pty"] and e["exit_status"] == 3
    )
    assert ends
    cast = stack.root / "recordings" / str(ends[-1]["recording"])
    events = [json.loads(line) for line in cast.read_text().splitlines()[1:]]
    assert ["r", "100x40"] in [e[1:] for e in events]
    assert "marker-42" in "".join(e[2] for e in events if e[1] == "o")
    if os.path.exists("/usr/bin/asciinema"):
        # asciinema wants a controlling terminal even to print a recording.
        child, tty_fd = pty.fork()
        if child == 0:
            os.execvp("asciinema", ["asciinema", "cat", str(cast)])
        try:
            played = _read_until(tty_fd, b"\x00", timeout=20)
            _, status = os.waitpid(child, 0)
        finally:
            os.close(tty_fd)
        assert os.waitstatus_to_exitcode(status) == 0
        assert b"marker-42" in played


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_scp_and_sftp_recorded_and_audited_per_operation(
    stack: GatewayStack, tmp_path: Path
) -> None:
    rita = stack.users["rita"]
    cfg = str(stack.ssh_config(rita))
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(10 * 1024 * 1024))
    remote = f"/tmp/gpuhop-rec-{os.getpid()}.bin"
    up = stack.run(["scp", "-F", cfg, "-J", "gw", "-q", str(src), f"root@sg-1:{remote}"], 60)
    assert up.returncode == 0, up.stderr
    back = tmp_path / "back.bin"
    down = stack.run(["scp", "-F", cfg, "-J", "gw", "-q", f"root@sg-1:{remote}", str(back)], 60)
    assert down.returncode == 0, down.stderr
    assert _sha(back) == _sha(src)
    batch = tmp_path / "batch"
    got = tmp_path / "sftp-got.bin"
    batch.write_text(
        f"put {src} {remote}.2\nget {remote}.2 {got}\n"
        f"rename {remote}.2 {remote}.3\nrm {remote}.3\nrm {remote}\n"
    )
    sftp = stack.run(["sftp", "-F", cfg, "-J", "gw", "-b", str(batch), "root@sg-1"], 60)
    assert sftp.returncode == 0, sftp.stderr
    assert _sha(got) == _sha(src)
    size = 10 * 1024 * 1024
    files = _wait_events(stack, "sftp.file", lambda e: e["user"] == "rita")
    assert any(e["path"] == remote and e["bytes_written"] == size for e in files)
    assert any(e["path"] == remote and e["bytes_read"] == size for e in files)
    assert _wait_events(stack, "sftp.rename", lambda e: e["to"] == f"{remote}.3")
    assert _wait_events(stack, "sftp.remove", lambda e: e["path"] == f"{remote}.3")


def test_paramiko_direct_form(stack: GatewayStack) -> None:
    import paramiko

    rita = stack.users["rita"]
    key = paramiko.Ed25519Key.from_private_key_file(str(rita.key))
    key.load_certificate(str(rita.cert))
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    plain = stack.plain_known_hosts()
    client._host_keys = paramiko.HostKeys(str(plain))
    client.connect(
        "127.0.0.1",
        stack.port,
        username="rita+my-1",
        pkey=key,
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )
    try:
        _, out, err = client.exec_command("echo p; echo q >&2; exit 4")
        assert out.read() == b"p\n" and err.read() == b"q\n"
        assert out.channel.recv_exit_status() == 4
    finally:
        client.close()


def test_pinned_host_key_mismatch_refused(fresh_stack: GatewayStack) -> None:
    from gateway.adapters.keys import ensure_private_key, public_line

    wrong = public_line(ensure_private_key(fresh_stack.root / "keys" / "not-the-host", ""))
    text = fresh_stack.config.read_text().replace(fresh_stack.hosts["my-1"].host_key_line, wrong)
    fresh_stack.config.write_text(text)
    fresh_stack.start_gateway()
    result = fresh_stack.run(_direct(fresh_stack, "rita", "my-1", "true"))
    assert result.returncode == 255
    assert b"does not match the pinned key" in result.stderr
    assert _wait_events(fresh_stack, "upstream.fail", lambda e: "pinned" in str(e["reason"]))


def test_unwritable_recordings_fail_closed(fresh_stack: GatewayStack) -> None:
    # A file where the directory should be: creating the recording must fail.
    (fresh_stack.root / "recordings").write_text("not a directory")
    fresh_stack.start_gateway()
    result = fresh_stack.run(_direct(fresh_stack, "rita", "sg-1", "echo should-not-run"))
    assert result.returncode == 255
    assert b"should-not-run" not in result.stdout
    assert b"session refused" in result.stderr
    # and the gateway never logged in to the host on rita's behalf
    assert 'ID "gpuhop:rita:' not in fresh_stack.hosts["sg-1"].log_path.read_text()


def test_kill_9_leaves_readable_recording(fresh_stack: GatewayStack) -> None:
    fresh_stack.start_gateway()
    proc = subprocess.Popen(
        _direct(fresh_stack, "rita", "sg-1", "echo before-kill; sleep 30"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"before-kill\n"
    proc.stdout.close()
    assert fresh_stack.proc is not None
    fresh_stack.proc.kill()
    fresh_stack.proc.wait()
    fresh_stack.proc = None
    proc.wait(timeout=30)
    casts = list((fresh_stack.root / "recordings").glob("*.cast"))
    assert len(casts) == 1
    lines = casts[0].read_text().splitlines()
    assert json.loads(lines[0])["version"] == 2
    events = [json.loads(line) for line in lines[1:]]
    assert "before-kill" in "".join(e[2] for e in events if e[1] == "o")
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "audit",
            "verify",
            "--database",
            fresh_stack.database_url,
        ],
        capture_output=True,
        timeout=60,
    )
    assert verify.returncode == 0


def test_editor_forward_to_host_loopback_is_relayed_and_audited(stack: GatewayStack) -> None:
    """What VS Code Remote-SSH does: a local forward to the host's own loopback."""
    rita = stack.users["rita"]
    # Something listening on the host's loopback that is not its sshd (a forward to the
    # SSH port would carry an unrecorded session; test_attack_forwards.py attacks that).
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    host_port = listener.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"editor-server-ready\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    cmd = [
        "ssh", "-F", str(stack.ssh_config(rita)), "-J", "gw",
        "-W", f"localhost:{host_port}", "root@sg-1",
    ]  # fmt: skip
    try:
        result = stack.run(cmd, input=b"", timeout=30)
    finally:
        listener.close()
        thread.join(10)
    assert result.stdout.startswith(b"editor-server-ready"), result.stderr
    opens = _wait_events(stack, "forward.open", lambda e: e["user"] == "rita")
    assert opens and opens[-1]["dest"] == f"localhost:{host_port}"
    closes = _wait_events(
        stack, "forward.close", lambda e: e["forward_id"] == opens[-1]["forward_id"]
    )
    assert closes and int(closes[0]["bytes_down"]) > 0  # type: ignore[call-overload]


def test_forward_elsewhere_or_without_the_role_is_refused(stack: GatewayStack) -> None:
    rita = stack.users["rita"]
    cmd = [
        "ssh", "-F", str(stack.ssh_config(rita)), "-J", "gw",
        "-W", "10.1.2.3:22", "root@sg-1",
    ]  # fmt: skip
    result = stack.run(cmd, input=b"", timeout=30)
    assert result.returncode != 0
    assert b"administratively prohibited" in result.stderr
    denies = _wait_events(
        stack, "channel.deny", lambda e: e["user"] == "rita" and e["dest"] == "10.1.2.3:22"
    )
    assert denies and "loopback" in str(denies[0]["reason"])


@pytest.mark.parametrize("right_ca", [True, False])
def test_host_trusted_by_certificate_from_the_inventory_ca(
    fresh_stack: GatewayStack, right_ca: bool
) -> None:
    """A host may be pinned by a host CA instead of a key: its certificate must name it."""
    from gateway.adapters.keys import ensure_private_key, public_line

    stack = fresh_stack
    host = stack.hosts["my-1"]
    ca_path = stack.root / "keys" / "hosts_ca"
    ensure_private_key(ca_path, "site host CA")
    pub = host.directory / "host_ed25519.pub"
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca_path), "-I", "my-1", "-h", "-n", "my-1",
         "-V", "+1h", str(pub)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    host.stop()
    host.extra_config = [f"HostCertificate {host.directory / 'host_ed25519-cert.pub'}"]
    host.start()
    trusted = ca_path if right_ca else stack.root / "keys" / "other_ca"
    ca_line = public_line(ensure_private_key(trusted, ""))
    text = stack.config.read_text().replace(
        f'host_key = "{host.host_key_line}"', f'host_ca = "{ca_line}"'
    )
    assert "host_ca" in text
    stack.config.write_text(text)
    stack.start_gateway()
    result = stack.run(_direct(stack, "rita", "my-1", "echo via-ca"))
    if right_ca:
        assert (result.returncode, result.stdout) == (0, b"via-ca\n"), result.stderr
    else:
        assert result.returncode == 255
        assert b"certificate from its host CA" in result.stderr
