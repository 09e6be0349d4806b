"""Attacks on "no unrecorded path": forwards and channel kinds inside recorded sessions.

A recorded-only user must not reach a host's sshd through a forward (that would
be an end-to-end encrypted, unrecorded session), must not get a forward past a
down audit log, and every refused forward-like request (-L, -W, -R, -A, UNIX
sockets) leaves an audit event with its reason. Every client here is real
OpenSSH against the real gateway subprocess.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import need_openssh
from tests.integration.gwstack import GatewayStack, StackUser

pytestmark = pytest.mark.openssh


class _HostService(socketserver.ThreadingTCPServer):
    """A service on the hosts' loopback (here: the machine's): greets, then echoes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Greeter)
        self.connections = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Greeter(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Any = self.server
        server.connections += 1
        sock: socket.socket = self.request
        sock.settimeout(10)
        sock.sendall(b"hello from the host\n")  # the host speaks first
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                sock.sendall(data)


def _roles(service_port: int) -> str:
    return f"""
[[roles]]
name = "rec"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]
forwarding = true
forward_ports = ["1024-65535"]

[[roles]]
name = "extras"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]
forwarding = true
forward_ports = [{service_port}]
agent_forwarding = true
remote_forwarding = true

[[roles]]
name = "plain"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]
"""


def _build(root: Path, service: _HostService, extra: str = "") -> GatewayStack:
    need_openssh()
    stack = GatewayStack(root, extra_gateway=extra)
    stack.ca()
    stack.add_host("sg-1")
    stack.add_host("my-1")
    for user in ("rita", "vic", "dora"):
        stack.add_user(user)
    stack.write_config(
        _roles(service.port), {"rita": ["rec"], "vic": ["extras"], "dora": ["plain"]}
    )
    stack.start_gateway()
    return stack


@pytest.fixture(scope="module")
def service() -> Iterator[_HostService]:
    server = _HostService()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def fw(tmp_path_factory: pytest.TempPathFactory, service: _HostService) -> Iterator[GatewayStack]:
    stack = _build(tmp_path_factory.mktemp("fw"), service)
    try:
        yield stack
    finally:
        stack.close()


def _jump(stack: GatewayStack, user: str, *args: str) -> list[str]:
    u = stack.users[user]
    return ["ssh", "-F", str(stack.ssh_config(u)), "-J", "gw", *args, "root@sg-1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _listening(cmd: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``ssh -N -L port:...`` until its local listener accepts, then yield it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise AssertionError(f"ssh exited: {proc.communicate()[1]!r}")
            time.sleep(0.1)
        else:
            raise AssertionError("ssh -L listener never came up")
        yield proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _host_login(stack: GatewayStack, user: StackUser, port: int) -> list[str]:
    """What an attacker runs through a forward: a direct SSH login to whatever answers."""
    assert user.cert is not None
    return [
        "ssh", "-p", str(port), "-i", str(user.key), "-o", f"CertificateFile={user.cert}",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
        "root@127.0.0.1", "echo unrecorded-root-shell",
    ]  # fmt: skip


def _denies(stack: GatewayStack, user: str, request: str, count: int = 1) -> list[dict[str, Any]]:
    return stack.wait_audit_events(
        "channel.deny", lambda e: e.get("user") == user and e["request"] == request, count
    )


@pytest.mark.parametrize("dest", ["127.0.0.1:22", "localhost:SSHPORT", "127.0.0.2:SSHPORT"])
def test_local_forward_to_the_hosts_sshd_is_refused_and_audited(
    fw: GatewayStack, dest: str
) -> None:
    """``ssh -J gw -L P:127.0.0.1:22`` then ``ssh -p P root@127.0.0.1``: an unrecorded root
    shell on main. The forward to any of the host's SSH ports is refused, with its reason."""
    target = dest.replace("SSHPORT", str(fw.hosts["sg-1"].port))
    port = _free_port()
    before = len(fw.audit_events("channel.deny"))
    cmd = _jump(fw, "rita", "-N", "-L", f"{port}:{target}")
    with _listening(cmd, port) as proc:
        login = fw.run(_host_login(fw, fw.users["rita"], port), timeout=30)
        assert b"unrecorded-root-shell" not in login.stdout
        assert login.returncode == 255
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert b"administratively prohibited" in err and b"bypass recording" in err, err
    denies = [e for e in _denies(fw, "rita", "direct-tcpip", before + 1) if e["dest"] == target]
    assert denies and "is SSH on sg-1" in denies[-1]["reason"]
    assert not [e for e in fw.audit_events("forward.open") if e["dest"] == target]


def test_stdio_forward_to_the_ssh_port_is_refused(fw: GatewayStack) -> None:
    """``-W`` (what ProxyCommand/ProxyJump chains use) is the same channel kind: refused."""
    ssh_port = fw.hosts["sg-1"].port
    proxy = " ".join(_jump(fw, "rita", "-W", f"localhost:{ssh_port}"))
    attack = _host_login(fw, fw.users["rita"], 22)
    attack[1:1] = ["-o", f"ProxyCommand={proxy}"]
    result = fw.run(attack, timeout=30)
    assert b"unrecorded-root-shell" not in result.stdout
    assert result.returncode == 255
    assert b"bypass recording" in result.stderr, result.stderr


def test_listed_port_is_relayed_and_the_host_speaks_first(
    fw: GatewayStack, service: _HostService
) -> None:
    """The forward that is allowed works: greeting (sent before the user says anything)
    and echo both arrive, and open/close are audited with bytes."""
    result = fw.run(_jump(fw, "vic", "-W", f"127.0.0.1:{service.port}"), input=b"ping\n")
    assert result.stdout == b"hello from the host\nping\n", result.stderr
    opens = fw.wait_audit_events("forward.open", lambda e: e["user"] == "vic")
    assert opens and opens[-1]["dest"] == f"127.0.0.1:{service.port}"
    assert opens[-1]["role"] == "extras"
    closes = fw.wait_audit_events(
        "forward.close", lambda e: e["forward_id"] == opens[-1]["forward_id"]
    )
    assert closes and closes[0]["bytes_down"] == len(b"hello from the host\nping\n")


@pytest.mark.parametrize(
    ("user", "port", "reason"),
    [
        ("vic", "OTHER", "role extras may forward to ports"),  # not listed
        ("dora", "SERVICE", "role plain does not allow port forwarding"),
    ],
)
def test_unlisted_port_or_no_forwarding_is_refused(
    fw: GatewayStack, service: _HostService, user: str, port: str, reason: str
) -> None:
    dest = f"127.0.0.1:{service.port if port == 'SERVICE' else service.port + 1}"
    before = service.connections
    result = fw.run(_jump(fw, user, "-W", dest), input=b"")
    assert result.returncode == 255 and result.stdout == b""
    assert reason.encode() in result.stderr, result.stderr
    denies = [e for e in _denies(fw, user, "direct-tcpip") if e["dest"] == dest]
    assert denies and reason in denies[-1]["reason"]
    assert service.connections == before  # nothing reached the host


@pytest.mark.parametrize(
    ("user", "reason"),
    [
        ("rita", "role rec does not allow remote forwarding"),
        ("vic", "not relayed in recorded mode yet"),  # allowed by the role, no relay yet
    ],
)
def test_remote_forward_is_refused_with_its_reason(
    fw: GatewayStack, service: _HostService, user: str, reason: str
) -> None:
    cmd = _jump(
        fw,
        user,
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        f"{service.port}:127.0.0.1:9",
    )
    result = fw.run([*cmd, "echo", "ran"], timeout=30)
    assert result.returncode == 255 and b"ran" not in result.stdout
    assert b"remote port forwarding failed" in result.stderr, result.stderr
    denies = _denies(fw, user, "tcpip-forward")
    assert denies and reason in denies[-1]["reason"]
    assert denies[-1]["host"] == "sg-1"


@pytest.mark.parametrize(
    ("user", "form", "reason"),
    [
        ("rita", "jump", "role rec does not allow agent forwarding"),
        ("vic", "jump", "not relayed in recorded mode yet"),
        ("vic", "direct", "agent forwarding is not relayed for sessions on the gateway"),
    ],
)
def test_agent_forwarding_is_refused_and_audited(
    fw: GatewayStack, tmp_path: Path, user: str, form: str, reason: str
) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        u = fw.users[user]
        cmd = (
            _jump(fw, user, "-A")
            if form == "jump"
            else ["ssh", "-F", str(fw.ssh_config(u)), "-A", f"{user}+sg-1@gw"]
        )
        result = fw.run([*cmd, "echo agent=${SSH_AUTH_SOCK:-none}"], env=env, timeout=30)
    finally:
        agent.terminate()
        agent.wait(10)
    assert (result.returncode, result.stdout) == (0, b"agent=none\n"), result.stderr
    denies = [e for e in _denies(fw, user, "auth-agent") if reason in e["reason"]]
    assert denies


def test_unix_socket_forwards_are_refused_everywhere(fw: GatewayStack, tmp_path: Path) -> None:
    """``-L port:/path`` and ``-R /path:...`` inside the jump, and ``-L`` to the gateway."""
    path = tmp_path / "svc.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))  # a real UNIX service on the host's (this machine's) file system
    server.listen()
    server.settimeout(0.5)
    try:
        port = _free_port()
        with _listening(_jump(fw, "rita", "-N", "-L", f"{port}:{path}"), port) as proc:
            with socket.create_connection(("127.0.0.1", port), 10) as s:
                s.settimeout(10)
                assert s.recv(100) == b""  # closed: the channel was refused
            proc.terminate()
            _, err = proc.communicate(timeout=10)
        assert b"UNIX socket forwarding" in err, err
        with pytest.raises(TimeoutError):
            server.accept()  # nothing reached the socket
        remote = _jump(
            fw, "rita", "-o", "ExitOnForwardFailure=yes", "-R", f"{tmp_path}/r:127.0.0.1:9"
        )
        result = fw.run([*remote, "true"], timeout=30)
        assert result.returncode == 255 and b"forwarding failed" in result.stderr
        port = _free_port()
        front = [*fw.gateway_command(fw.users["rita"]), "-N", "-L", f"{port}:{path}"]
        with _listening(front, port) as proc:
            with socket.create_connection(("127.0.0.1", port), 10) as s:
                s.settimeout(10)
                assert s.recv(100) == b""
            proc.terminate()
            _, err = proc.communicate(timeout=10)
        assert b"UNIX socket forwarding is never allowed" in err, err
    finally:
        server.close()
    denies = _denies(fw, "rita", "streamlocal", 3)
    dests = {e["dest"] for e in denies}
    assert {str(path), f"{tmp_path}/r"} <= dests
    assert all("UNIX socket forwarding" in e["reason"] for e in denies)
    assert len([e for e in denies if e["dest"] == str(path)]) >= 2  # jump and front


def test_forward_is_refused_while_the_audit_log_is_down(
    tmp_path: Path, service: _HostService
) -> None:
    """forward.open is durable before the forward opens: with the audit database locked,
    the user gets a clear reason and nothing reaches the host."""
    stack = _build(tmp_path, service, "audit_start_timeout_s = 1.0")
    try:
        if not stack.database_url.startswith("sqlite"):
            pytest.skip("the lock below is SQLite's; PostgreSQL outages: test_replicas.py")
        cmd = _jump(stack, "vic", "-W", f"127.0.0.1:{service.port}")
        ok = stack.run(cmd, input=b"")
        assert ok.stdout.startswith(b"hello from the host"), ok.stderr  # works while it is up
        before = service.connections
        lock = sqlite3.connect(stack.database, timeout=5, isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")  # every writer waits: the audit log is down
            result = stack.run(cmd, input=b"", timeout=60)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert result.returncode == 255 and result.stdout == b""
        assert b"audit log unavailable; forward refused" in result.stderr, result.stderr
        assert service.connections == before  # nothing reached the host
    finally:
        stack.close()
