"""Attacks on "no unrecorded path": forwards and channel kinds inside recorded sessions.

A recorded-only user must not reach a host's sshd through a forward (that would
be an end-to-end encrypted, unrecorded session), must not get a forward past a
down audit log, and every refused forward-like request (-L, -W, -R, -A, UNIX
sockets) leaves an audit event with its reason. Every client here is real
OpenSSH against the real gateway subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import socketserver
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from gateway.adapters.keys import ensure_private_key, public_line
from tests.integration.conftest import need_openssh
from tests.integration.gwstack import GatewayStack, StackUser

pytestmark = pytest.mark.openssh

LIMIT = 3  # max_forwards_per_session in the module's gateway


class _HostService(socketserver.ThreadingTCPServer):
    """A service on the hosts' loopback (here: the machine's): greets, then echoes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Greeter)
        self.connections = 0
        self.listen_port = _free_port()  # free on the host, for ssh -R

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


def _roles(service_port: int, listen_port: int) -> str:
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
forward_ports = [{service_port}, {listen_port}]
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
        _roles(service.port, service.listen_port),
        {"rita": ["rec"], "vic": ["extras"], "dora": ["plain"]},
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
    stack = _build(tmp_path_factory.mktemp("fw"), service, f"max_forwards_per_session = {LIMIT}")
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


def _stop(proc: subprocess.Popen[bytes]) -> bytes:
    """End ``ssh`` and its ProxyJump child (its own process group); return its stderr."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
    return err


@contextlib.contextmanager
def _listening(cmd: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``ssh -N -L port:...`` until its local listener accepts, then yield it."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise AssertionError(f"ssh exited: {_stop(proc)!r}")
            time.sleep(0.1)
        else:
            raise AssertionError("ssh -L listener never came up")
        yield proc
    finally:
        if proc.returncode is None:
            _stop(proc)


def _host_login(stack: GatewayStack, user: StackUser, port: int) -> list[str]:
    """What an attacker runs through a forward: a direct SSH login to whatever answers."""
    assert user.cert is not None
    return [
        "ssh", "-p", str(port), "-i", str(user.key), "-o", f"CertificateFile={user.cert}",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
        "root@127.0.0.1", "echo unrecorded-root-shell",
    ]  # fmt: skip


def _denies(
    stack: GatewayStack, user: str, request: str, why: str = "", dest: str | None = None
) -> list[dict[str, Any]]:
    """This user's refusals of ``request`` whose reason holds ``why`` (and for ``dest``)."""
    return stack.wait_audit_events(
        "channel.deny",
        lambda e: (
            e.get("user") == user
            and e["request"] == request
            and why in e["reason"]
            and (dest is None or e["dest"] == dest)
        ),
    )


@pytest.mark.parametrize("dest", ["127.0.0.1:22", "localhost:SSHPORT", "127.0.0.2:SSHPORT"])
def test_local_forward_to_the_hosts_sshd_is_refused_and_audited(
    fw: GatewayStack, dest: str
) -> None:
    """``ssh -J gw -L P:127.0.0.1:22`` then ``ssh -p P root@127.0.0.1``: an unrecorded root
    shell on main. The forward to any of the host's SSH ports is refused, with its reason."""
    target = dest.replace("SSHPORT", str(fw.hosts["sg-1"].port))
    port = _free_port()
    cmd = _jump(fw, "rita", "-N", "-L", f"{port}:{target}")
    with _listening(cmd, port) as proc:
        login = fw.run(_host_login(fw, fw.users["rita"], port), timeout=30)
        assert b"unrecorded-root-shell" not in login.stdout
        assert login.returncode == 255
        err = _stop(proc)
    assert b"administratively prohibited" in err and b"bypass recording" in err, err
    assert _denies(fw, "rita", "direct-tcpip", "is SSH on sg-1", target)
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
    assert _denies(fw, user, "direct-tcpip", reason, dest)
    assert service.connections == before  # nothing reached the host


@pytest.mark.parametrize(
    ("user", "port", "reason"),
    [
        ("rita", "LISTEN", "role rec does not allow remote forwarding"),
        ("vic", "SSH", "port SSH is SSH on sg-1"),
        ("vic", "OTHER", "role extras may listen on ports"),
    ],
)
def test_remote_forward_is_refused_with_its_reason(
    fw: GatewayStack, service: _HostService, user: str, port: str, reason: str
) -> None:
    ports = {
        "LISTEN": service.listen_port,
        "SSH": fw.hosts["sg-1"].port,
        "OTHER": service.listen_port + 1,
    }
    reason = reason.replace("SSH is", f"{ports['SSH']} is")
    cmd = _jump(fw, user, "-o", "ExitOnForwardFailure=yes", "-R", f"{ports[port]}:127.0.0.1:9")
    result = fw.run([*cmd, "echo", "ran"], timeout=30)
    assert result.returncode == 255 and b"ran" not in result.stdout
    assert b"remote port forwarding failed" in result.stderr, result.stderr
    denies = _denies(fw, user, "tcpip-forward", reason)
    assert denies and denies[-1]["host"] == "sg-1"


# On the host: connect to the -R listener (retrying until the gateway has opened it)
# and print what comes back through the user's ssh from the user's side.
_DIAL = """python3 -c '
import socket, time
for _ in range(100):
    try:
        s = socket.create_connection(("127.0.0.1", {port}), 5)
        break
    except OSError:
        time.sleep(0.1)
s.sendall(b"from the host side\\n")
f = s.makefile("rb")
print(f.readline().decode().strip())
print(f.readline().decode().strip())
'"""


def test_allowed_remote_forward_is_relayed_and_audited(
    fw: GatewayStack, service: _HostService
) -> None:
    """``ssh -J gw -R P:127.0.0.1:SERVICE``: a connection on the host's P reaches the user's
    side through the gateway; the listener and the connection are audited."""
    port = service.listen_port
    cmd = _jump(
        fw, "vic", "-o", "ExitOnForwardFailure=yes", "-R", f"{port}:127.0.0.1:{service.port}"
    )
    before = service.connections
    result = fw.run([*cmd, _DIAL.format(port=port)], timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(b"\n")[:2] == [b"hello from the host", b"from the host side"]
    assert service.connections == before + 1
    listens = fw.wait_audit_events("forward.listen", lambda e: e["user"] == "vic")
    assert listens and listens[-1]["dest"] == f"localhost:{port}"
    opens = fw.wait_audit_events(
        "forward.open", lambda e: e["user"] == "vic" and e.get("remote") is True
    )
    assert opens
    closes = fw.wait_audit_events(
        "forward.close", lambda e: e["forward_id"] == opens[-1]["forward_id"]
    )
    assert closes and closes[0]["bytes_up"] > 0 and closes[0]["bytes_down"] > 0
    assert fw.wait_audit_events("forward.unlisten", lambda e: e["user"] == "vic")


@pytest.mark.parametrize(
    ("user", "form", "reason"),
    [
        ("rita", "jump", "role rec does not allow agent forwarding"),
        ("rita", "direct", "role rec does not allow agent forwarding"),
        # vic's role allows it: relayed, see test_attack_agent.py
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
    assert _denies(fw, user, "auth-agent", reason)


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
            err = _stop(proc)
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
            err = _stop(proc)
        assert b"UNIX socket forwarding is never allowed" in err, err
    finally:
        server.close()
    why = "UNIX socket forwarding"
    assert _denies(fw, "rita", "streamlocal", why, f"{tmp_path}/r")
    for in_jump in (True, False):  # the jump's refusal names its host; the front's none
        assert fw.wait_audit_events(
            "channel.deny",
            lambda e, j=in_jump: (
                e["request"] == "streamlocal"
                and e["dest"] == str(path)
                and why in e["reason"]
                and ("host" in e) == j
            ),
        ), in_jump


async def test_forwards_per_session_are_bounded(fw: GatewayStack, service: _HostService) -> None:
    """One jump session cannot hold more than max_forwards_per_session forwards open
    (asyncssh as the client: one session, many direct-tcpip channels); a closed one frees
    its slot."""
    vic = fw.users["vic"]
    assert vic.cert is not None
    keys = [(asyncssh.read_private_key(str(vic.key)), asyncssh.read_certificate(str(vic.cert)))]
    common: dict[str, Any] = {
        "client_keys": keys,
        "known_hosts": str(fw.known_hosts),
        "agent_path": None,
        "config": None,
    }
    async with (
        asyncssh.connect("127.0.0.1", fw.port, username="vic", **common) as gw,
        asyncssh.connect("sg-1", tunnel=gw, username="root", **common) as inner,
    ):
        opened = []
        for _ in range(LIMIT):
            reader, writer = await inner.open_connection("127.0.0.1", service.port)
            assert await asyncio.wait_for(reader.readline(), 10) == b"hello from the host\n"
            opened.append(writer)
        with pytest.raises(asyncssh.ChannelOpenError, match=f"at most {LIMIT} forwards"):
            await inner.open_connection("127.0.0.1", service.port)
        opened[0].close()
        await asyncio.wait_for(opened[0].channel.wait_closed(), 10)
        reader, writer = await asyncio.wait_for(
            inner.open_connection("127.0.0.1", service.port), 10
        )
        assert await asyncio.wait_for(reader.readline(), 10) == b"hello from the host\n"
        for w in [*opened[1:], writer]:
            w.close()
    assert await asyncio.to_thread(_denies, fw, "vic", "direct-tcpip", f"at most {LIMIT} forwards")


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
            remote = _jump(
                stack,
                "vic",
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                f"{service.listen_port}:127.0.0.1:9",
            )
            listen = stack.run([*remote, "true"], timeout=60)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert result.returncode == 255 and result.stdout == b""
        assert b"audit log unavailable; forward refused" in result.stderr, result.stderr
        assert service.connections == before  # nothing reached the host
        assert listen.returncode == 255 and b"remote port forwarding failed" in listen.stderr
    finally:
        stack.close()


def _admin_token(stack: GatewayStack) -> str:
    cmd = [
        sys.executable, "-m", "gateway.cli", "token", "create", "--config", str(stack.config),
        "--user", "ops", "--scope", "admin",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


def test_runtime_roles_get_the_same_forward_rules(fw: GatewayStack, service: _HostService) -> None:
    """A role added over the admin API is validated and enforced like a [[roles]] entry."""
    api = f"http://127.0.0.1:{fw.api_port}/v1/admin"
    headers = {"Authorization": f"Bearer {_admin_token(fw)}"}
    base = {"hosts": ["*"], "accounts": ["root"], "modes": ["recorded"]}
    with httpx.Client(headers=headers, trust_env=False, timeout=30) as http:
        for bad, words in [
            ({"forwarding": True}, "forwarding = true needs forward_ports"),
            ({"forwarding": True, "forward_ports": [22]}, "port 22 is SSH"),
            ({"forwarding": True, "forward_ports": ["9-1"]}, "runs backwards"),
            ({"forwarding": True, "forward_ports": [True]}, "not a number"),
        ]:
            refused = http.post(f"{api}/roles", json={"name": "rt-bad", **base, **bad})
            assert refused.status_code == 422 and words in refused.text, refused.text
        body = {"name": "rt", **base, "forwarding": True, "forward_ports": [service.port]}
        made = http.post(f"{api}/roles", json=body)
        assert made.status_code < 300, made.text
        roles = {r["name"]: r for r in http.get(f"{api}/roles").json()["roles"]}
        assert roles["rt"]["forward_ports"] == [service.port]
        assert roles["rt"]["agent_forwarding"] is False
        assert roles["rt"]["remote_forwarding"] is False
        user = fw.add_user("rtu", cert=False)
        key = ensure_private_key(user.key, "rtu@test")
        added = http.post(
            f"{api}/users", json={"name": "rtu", "roles": ["rt"], "keys": [public_line(key)]}
        )
        assert added.status_code < 300, added.text
    ok = fw.run(_jump(fw, "rtu", "-W", f"127.0.0.1:{service.port}"), input=b"")
    assert ok.stdout.startswith(b"hello from the host"), ok.stderr
    ssh_port = fw.hosts["sg-1"].port
    refused_ssh = fw.run(_jump(fw, "rtu", "-W", f"localhost:{ssh_port}"), input=b"")
    assert refused_ssh.returncode == 255 and b"bypass recording" in refused_ssh.stderr
    assert _denies(fw, "rtu", "direct-tcpip", "is SSH on sg-1")
