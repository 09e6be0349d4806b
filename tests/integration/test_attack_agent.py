"""Agent forwarding (``ssh -A``) through the gateway, with a real ssh-agent and real OpenSSH.

A role may allow agent forwarding (off by default). In recorded mode the
gateway relays the user's agent to the host for that session only: its own
socket (0600 in a private 0700 directory, gone when the session ends), its own
connection to the host (never the pooled one another session uses), audited as
``session.agent``. A refused request is audited and the user's ssh prints why.
In passthrough the host decides from the certificate, which permits agent
forwarding only when every role granting passthrough allows it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.adapters.keys import ensure_private_key, public_line
from gpuhop_sim import procs
from tests.integration.conftest import need_openssh
from tests.integration.gwstack import GatewayStack, StackUser

pytestmark = pytest.mark.openssh

ROLES = """
[[roles]]
name = "agents"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]
agent_forwarding = true

[[roles]]
name = "plain"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]

[[roles]]
name = "pt-agent"
hosts = ["name:sg-1"]
accounts = ["root"]
modes = ["passthrough"]
agent_forwarding = true

[[roles]]
name = "pt-plain"
hosts = ["name:my-1"]
accounts = ["root"]
modes = ["passthrough"]
"""

USERS = {
    "ada": ["agents"],  # recorded, ssh -A allowed
    "bob": ["plain"],  # recorded, ssh -A not allowed
    "pia": ["pt-agent"],  # passthrough on sg-1, agent allowed
    "pat": ["pt-plain"],  # passthrough on my-1, agent not allowed
    "max": ["pt-agent", "pt-plain"],  # one role without: the certificate permits nothing
}
CERT_USERS = ("ada", "bob")  # log in with a certificate from the test CA; others by key
KEY_COMMENT = "agent-key@client"
NO_AGENT = b"Could not open a connection to your authentication agent"
LIST = "echo sock=${SSH_AUTH_SOCK:-none}; ssh-add -l"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    need_openssh()
    s = GatewayStack(tmp_path_factory.mktemp("agent"))
    s.ca()
    s.upstream_ca()
    s.add_host("sg-1")
    s.add_host("my-1")
    for name in USERS:
        s.add_user(name, cert=name in CERT_USERS)
    s.write_config(ROLES, USERS)
    try:
        s.start_gateway()
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real ssh-agent holding one key; the environment that points ssh at it."""
    root = tmp_path_factory.mktemp("client-agent")
    sock = root / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        key = root / "id_agent"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", KEY_COMMENT, "-f", str(key)],
            check=True,
            timeout=30,
        )
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(key)], env=env, check=True, timeout=30)
        yield env
    finally:
        proc.terminate()
        proc.wait(10)


def _jump(stack: GatewayStack, user: str, *args: str, host: str = "sg-1") -> list[str]:
    u = stack.users[user]
    return ["ssh", "-F", str(stack.ssh_config(u)), "-J", "gw", *args, f"root@{host}"]


def _direct(stack: GatewayStack, user: str, *args: str) -> list[str]:
    u = stack.users[user]
    return ["ssh", "-F", str(stack.ssh_config(u)), *args, f"{user}+sg-1@gw"]


def _form(stack: GatewayStack, form: str, user: str, *args: str) -> list[str]:
    if form == "command":  # ssh gw HOST COMMAND: the host is known once the command is
        return ["ssh", "-F", str(stack.ssh_config(stack.users[user])), *args, "gw", "sg-1"]
    return _jump(stack, user, *args) if form == "jump" else _direct(stack, user, *args)


def _agent_events(stack: GatewayStack, user: str, count: int = 1) -> list[dict[str, Any]]:
    return stack.wait_audit_events("session.agent", lambda e: e["user"] == user, count=count)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)


def _host_agent_sockets(stack: GatewayStack, host: str) -> set[str]:
    """Agent sockets the host's sshd made for sessions now open (``/tmp/ssh-*/agent.PID``,
    PID a session process of this host's sshd; other sshds on the machine are not ours)."""
    pid = int((stack.hosts[host].directory / "sshd.pid").read_text())
    ours = procs.descendants(pid)
    found = set()
    for path in Path("/tmp").glob("ssh-*/agent.*"):
        suffix = path.name.removeprefix("agent.")
        if suffix.isdigit() and int(suffix) in ours:
            found.add(str(path))
    return found


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float = 20.0) -> bytes:
    """Read the process's stdout until ``needle`` shows up, EOF, or ``timeout``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf


@pytest.mark.parametrize("form", ["jump", "direct", "command"])
def test_allowed_role_relays_the_agent_in_recorded_mode(
    stack: GatewayStack, agent: dict[str, str], form: str
) -> None:
    """``ssh -A -J gw host 'ssh-add -l'`` and ``ssh -A user+host@gw``: the client's key."""
    seen = len(_agent_events(stack, "ada", count=0))
    result = stack.run([*_form(stack, form, "ada", "-A"), LIST], env=agent, timeout=60)
    assert result.returncode == 0, result.stderr
    assert KEY_COMMENT.encode() in result.stdout, result.stdout
    assert b"sock=none" not in result.stdout
    events = _agent_events(stack, "ada", count=seen + 1)
    event = events[-1]
    assert (event["host"], event["account"], event["role"]) == ("sg-1", "root", "agents")
    assert event["via"] == ("jump" if form == "jump" else "direct")  # both gateway forms
    starts = stack.wait_audit_events(
        "session.start", lambda e: e.get("session_id") == event["session_id"]
    )
    assert starts and starts[0]["mode"] == "recorded"  # a recorded session, not passthrough


@pytest.mark.parametrize("form", ["jump", "direct"])
def test_role_without_agent_forwarding_gets_no_agent_and_is_told_why(
    stack: GatewayStack, agent: dict[str, str], form: str
) -> None:
    result = stack.run([*_form(stack, form, "bob", "-A"), LIST], env=agent, timeout=60)
    assert result.returncode != 0  # ssh-add -l fails on the host
    assert result.stdout.startswith(b"sock=none\n"), result.stdout
    assert NO_AGENT in result.stderr, result.stderr
    why = "role plain does not allow agent forwarding"
    assert f"gpuhop: agent forwarding refused: {why}".encode() in result.stderr
    denies = stack.wait_audit_events(
        "channel.deny",
        lambda e: (
            e.get("user") == "bob"
            and e["request"] == "auth-agent"
            and e.get("host") == "sg-1"
            and why in e["reason"]
        ),
    )
    assert denies
    assert not stack.audit_events("session.agent") or all(
        e["user"] != "bob" for e in stack.audit_events("session.agent")
    )


def test_agent_reaches_only_the_session_that_forwarded_it(
    stack: GatewayStack, agent: dict[str, str]
) -> None:
    """Concurrently to the same host: ada with -A; ada again without; bob without; ada
    with -A again. Only the -A sessions see an agent, each through a socket of its own."""
    seen = len(_agent_events(stack, "ada", count=0))
    first = subprocess.Popen(
        [*_jump(stack, "ada", "-A"), f"{LIST}; echo listed; sleep 60"],
        env=agent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out = _read_until(first, b"listed")
        assert KEY_COMMENT.encode() in out, out
        host_sock = out.split(b"sock=", 1)[1].split(b"\n", 1)[0].decode()
        assert _host_agent_sockets(stack, "sg-1") == {host_sock}
        [event] = _agent_events(stack, "ada", count=seen + 1)[seen:]
        socket_path = Path(event["socket"])
        assert stat.S_ISSOCK(socket_path.stat().st_mode)
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
        without = "echo sock=${SSH_AUTH_SOCK:-none}; ssh-add -l; echo rc=$?"
        # Sessions without -A open beside it: the host made an agent socket for ada's only.
        beside = [
            subprocess.Popen(
                [*_form(stack, form, user, "-a"), "echo ready; sleep 60"],
                env=agent,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for user, form in (("ada", "jump"), ("ada", "direct"), ("bob", "jump"))
        ]
        try:
            for proc in beside:
                assert b"ready" in _read_until(proc, b"ready")
            assert _host_agent_sockets(stack, "sg-1") == {host_sock}
        finally:
            for proc in beside:
                _stop(proc)
        for user in ("ada", "bob"):
            for form in ("jump", "direct"):
                # The agent is in the environment too, so a leak could not hide behind -a.
                result = stack.run([*_form(stack, form, user, "-a"), without], env=agent)
                assert result.returncode == 0, result.stderr
                assert result.stdout.startswith(b"sock=none\n"), (user, form, result.stdout)
                assert KEY_COMMENT.encode() not in result.stdout
                assert NO_AGENT in result.stderr
        second = stack.run([*_jump(stack, "ada", "-A"), LIST], env=agent, timeout=60)
        assert KEY_COMMENT.encode() in second.stdout, second.stderr
        events = _agent_events(stack, "ada", count=seen + 2)[seen:]
        assert len({e["socket"] for e in events}) == 2  # one socket per session
        assert len({e["session_id"] for e in events}) == 2
        assert Path(events[1]["socket"]).exists() is False  # the second one already ended
        assert socket_path.exists()  # the first is still open
    finally:
        _stop(first)
    _wait_gone(socket_path)


def _wait_gone(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (path.exists() or path.parent.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not path.exists() and not path.parent.exists(), path


@pytest.mark.parametrize("form", ["jump", "direct"])
def test_agent_socket_is_removed_when_the_session_ends(
    stack: GatewayStack, agent: dict[str, str], form: str
) -> None:
    seen = len(_agent_events(stack, "ada", count=0))
    result = stack.run([*_form(stack, form, "ada", "-A"), LIST], env=agent, timeout=60)
    assert KEY_COMMENT.encode() in result.stdout, result.stderr
    [event] = _agent_events(stack, "ada", count=seen + 1)[seen:]
    stack.wait_audit_events("session.end", lambda e: e["session_id"] == event["session_id"])
    _wait_gone(Path(event["socket"]))


def _cli(stack: GatewayStack, *args: str) -> str:
    cmd = [sys.executable, "-m", "gateway.cli", *args, "--config", str(stack.config)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _issue(stack: GatewayStack, user: StackUser) -> str:
    """A certificate from the gateway's API for the user's key, installed for ssh."""
    key = ensure_private_key(user.key, f"{user.name}@test")
    token = _cli(stack, "token", "create", "--user", user.name, "--scope", "user")
    response = httpx.post(
        f"http://127.0.0.1:{stack.api_port}/v1/certificates",
        json={"public_key": public_line(key)},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    user.cert = user.key.with_name(user.key.name + "-cert.pub")
    user.cert.write_text(str(response.json()["certificate"]) + "\n")
    return _listing(user.cert)


def _listing(cert: Path) -> str:
    done = subprocess.run(["ssh-keygen", "-Lf", str(cert)], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def test_passthrough_certificate_permits_agent_forwarding_only_for_allowed_roles(
    stack: GatewayStack, agent: dict[str, str]
) -> None:
    assert "permit-agent-forwarding" in _issue(stack, stack.users["pia"])
    assert "permit-agent-forwarding" not in _issue(stack, stack.users["pat"])
    assert "permit-agent-forwarding" not in _issue(stack, stack.users["max"])
    # The same rule for the admin's ``ca sign``.
    pub = stack.root / "keys" / "max.pub"
    pub.write_text(public_line(ensure_private_key(stack.users["max"].key, "")) + "\n")
    out = stack.root / "max-admin-cert.pub"
    _cli(stack, "ca", "sign", "--user", "pia", "--pubkey", str(pub), "--out", str(out))
    assert "permit-agent-forwarding" in _listing(out)
    _cli(stack, "ca", "sign", "--user", "max", "--pubkey", str(pub), "--out", str(out))
    assert "permit-agent-forwarding" not in _listing(out)
    # And the host holds to it: passthrough is end to end, the host's sshd decides.
    allowed = stack.run([*_jump(stack, "pia", "-A"), LIST], env=agent, timeout=60)
    assert KEY_COMMENT.encode() in allowed.stdout, allowed.stderr
    refused = stack.run([*_jump(stack, "pat", "-A", host="my-1"), LIST], env=agent, timeout=60)
    assert refused.returncode != 0 and refused.stdout.startswith(b"sock=none\n"), refused.stdout
    assert KEY_COMMENT.encode() not in refused.stdout
