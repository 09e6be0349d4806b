"""Attacks on the gateway's limits with real clients: floods and weak algorithms.

Each test drives the real gateway subprocess (tests/integration/gwstack.py)
with OpenSSH, paramiko, asyncssh, raw TCP or ``ssh-audit``, and checks what a
client sees (a refusal it can read, a bound it cannot pass) and what the audit
log holds (a flood costs a bounded number of rows, with exact counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import paramiko
import pytest

from tests.conftest import missing_peer
from tests.integration.conftest import build_stack
from tests.integration.gwstack import GatewayStack, StackUser

pytestmark = pytest.mark.openssh

LIMITS = "\n".join(
    [
        "max_channels_per_connection = 16",
        "max_env_per_channel = 32",
        "max_resizes_per_s = 10",
        "audit_events_per_connection_s = 5",
    ]
)


@pytest.fixture(scope="module")
def lstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    s = build_stack(tmp_path_factory.mktemp("limits"), extra_gateway=LIMITS)
    try:
        s.start_gateway()
        yield s
    finally:
        s.close()


def _paramiko(
    stack: GatewayStack,
    user: StackUser,
    login: str = "",
    disabled: dict[str, list[str]] | None = None,
) -> paramiko.SSHClient:
    key = paramiko.Ed25519Key.from_private_key_file(str(user.key))
    if user.cert is not None:
        key.load_certificate(str(user.cert))
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client._host_keys = paramiko.HostKeys(str(stack.plain_known_hosts()))
    client.connect(
        "127.0.0.1",
        stack.port,
        username=login or user.name,
        pkey=key,
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
        disabled_algorithms=disabled,
    )
    return client


def _transport(client: paramiko.SSHClient) -> paramiko.Transport:
    transport = client.get_transport()
    assert transport is not None
    return transport


def _source(transport: paramiko.Transport) -> str:
    """The connection's source as the gateway audits it."""
    return "{}:{}".format(*transport.sock.getsockname()[:2])


def _written(rows: list[dict[str, Any]]) -> int:
    """How many refusals the rows stand for: a first event is one, a summary its count."""
    return sum(int(r["repeated"]) if "repeated" in r else 1 for r in rows)


# -- algorithms --

_PQ_CAVEAT = "does not provide protection against post-quantum attacks"


def _ssh_audit(port: int) -> str:
    exe = shutil.which("ssh-audit") or str(Path(sys.executable).with_name("ssh-audit"))
    if not Path(exe).exists():
        missing_peer("ssh-audit is not installed (pip install ssh-audit)")
    result = subprocess.run(
        [exe, "-n", "--skip-rate-test", "-t", "10", "-p", str(port), "127.0.0.1"],
        capture_output=True,
        timeout=60,
    )
    out = result.stdout.decode()
    assert "(kex)" in out, out + result.stderr.decode()
    return out


def _judge(out: str) -> None:
    """No [fail]; the only [warn] is ssh-audit's post-quantum caveat on curve25519,
    kept for clients without ML-KEM (OpenSSH < 9.9, paramiko < 4)."""
    fails = [line for line in out.splitlines() if "[fail]" in line]
    warns = [line for line in out.splitlines() if "[warn]" in line]
    assert not fails, "\n".join(fails)
    assert all(_PQ_CAVEAT in w and "curve25519" in w for w in warns), "\n".join(warns)
    kex = re.findall(r"^\(kex\) (\S+)", out, re.M)
    assert kex[0] == "mlkem768x25519-sha256", kex
    assert not [k for k in kex if "nistp" in k or "diffie-hellman" in k], kex
    macs = re.findall(r"^\(mac\) (\S+)", out, re.M)
    assert macs and all(m.endswith("-etm@openssh.com") for m in macs), macs


def test_ssh_audit_front_clean(lstack: GatewayStack) -> None:
    _judge(_ssh_audit(lstack.port))


def test_ssh_audit_recorded_inner_clean(lstack: GatewayStack, tmp_path: Path) -> None:
    """ssh-audit against the inner server answering a recorded jump, reached by ``ssh -L``."""
    rita = lstack.users["rita"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    cfg = str(lstack.ssh_config(rita))
    fwd = f"127.0.0.1:{local}:sg-1:22"
    proc = subprocess.Popen(
        ["ssh", "-F", cfg, "-N", "-o", "ExitOnForwardFailure=yes", "-L", fwd, "gw"],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local), 1):
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        out = _ssh_audit(local)
        assert "gpuhop" in out  # the gateway's inner hop answered, not sg-1's sshd
        _judge(out)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.parametrize(
    "opts",
    [
        ["-o", "KexAlgorithms=ecdh-sha2-nistp256"],
        ["-o", "KexAlgorithms=diffie-hellman-group16-sha512"],
        ["-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-sha2-256"],
    ],
)
def test_inner_hop_refuses_what_the_front_refuses(lstack: GatewayStack, opts: list[str]) -> None:
    """``ssh -J`` whose inner hop asks for a disallowed algorithm: the inner server says no.

    The outer hop (ProxyCommand) uses the allowed set and logs in; only the
    inner key exchange is weakened."""
    rita = lstack.users["rita"]
    cfg = str(lstack.ssh_config(rita))
    proxy = f"ProxyCommand=ssh -F {cfg} -W %h:%p gw"
    cmd = ["ssh", "-F", cfg, "-o", proxy, *opts, "-T", "root@sg-1", "echo inner-ok"]
    result = lstack.run(cmd)
    assert result.returncode == 255, result.stdout
    assert b"no matching" in result.stderr.lower(), result.stderr
    # the same client with the allowed set gets in: the refusal was the algorithm
    ok = lstack.run(["ssh", "-F", cfg, "-o", proxy, "-T", "root@sg-1", "echo inner-ok"])
    assert ok.stdout == b"inner-ok\n", ok.stderr


@pytest.mark.parametrize(
    ("kex", "mac"),
    [
        (["ecdh-sha2-nistp521"], ["hmac-sha2-256-etm@openssh.com"]),
        (["diffie-hellman-group18-sha512"], ["hmac-sha2-256-etm@openssh.com"]),
        (["curve25519-sha256"], ["hmac-sha2-512"]),
    ],
)
def test_front_refuses_weak_asyncssh_client(
    lstack: GatewayStack, kex: list[str], mac: list[str]
) -> None:
    carol = lstack.users["carol"]

    async def attempt(kex: list[str], mac: list[str]) -> None:
        conn = await asyncssh.connect(
            "127.0.0.1",
            lstack.port,
            username="carol",
            client_keys=[str(carol.key)],
            known_hosts=None,
            kex_algs=kex,
            mac_algs=mac,
            encryption_algs=["aes128-ctr"],
            connect_timeout=10,
        )
        conn.close()

    # refused in the key exchange (asyncssh reports the server's disconnect, or the
    # connection closing first); the same client with the modern set gets in
    with pytest.raises((asyncssh.KeyExchangeFailed, asyncssh.ConnectionLost)):
        asyncio.run(attempt(kex, mac))
    asyncio.run(attempt(["curve25519-sha256"], ["hmac-sha2-256-etm@openssh.com"]))


@pytest.mark.parametrize(
    "disabled",
    [{}, {"kex": ["mlkem768x25519-sha256"]}],
    ids=["paramiko", "paramiko-without-mlkem"],
)
def test_paramiko_still_connects(lstack: GatewayStack, disabled: dict[str, list[str]]) -> None:
    """paramiko connects with the modern set, with ML-KEM and without it (as before 4.0)."""
    client = _paramiko(lstack, lstack.users["rita"], "rita+sg-1", disabled)
    try:
        _, out, _ = client.exec_command("echo via-paramiko")
        assert out.read() == b"via-paramiko\n"
        assert out.channel.recv_exit_status() == 0
        assert _transport(client).remote_mac.endswith("-etm@openssh.com")
    finally:
        client.close()


# -- channels and channel requests --


def test_ten_thousand_channel_opens_bounded(lstack: GatewayStack) -> None:
    """10,000 session channels on one connection: 16 open, the rest refused with the
    reason, the refusals audited in a bounded number of rows, the connection usable."""
    carol = lstack.users["carol"]
    client = _paramiko(lstack, carol)
    transport = _transport(client)
    opened: list[paramiko.Channel] = []
    refusals: dict[int, int] = {}
    started = time.monotonic()
    try:
        for _ in range(10_000):
            try:
                opened.append(transport.open_session(timeout=10))
            except paramiko.ChannelException as exc:
                refusals[exc.code] = refusals.get(exc.code, 0) + 1
        elapsed = time.monotonic() - started
        assert len(opened) == 16
        assert refusals == {paramiko.common.OPEN_FAILED_RESOURCE_SHORTAGE: 9_984}
        for chan in opened:
            chan.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # closes are acknowledged asynchronously
            try:
                chan = transport.open_session(timeout=10)
                break
            except paramiko.ChannelException as exc:
                refusals[exc.code] += 1
                time.sleep(0.1)
        chan.exec_command("")
        assert b"sg-1" in chan.makefile().read()  # the menu: the connection still works
        source = _source(transport)
    finally:
        client.close()
    rows = lstack.wait_audit_events(
        "channel.deny",
        lambda e: e["source"] == source and "too many channels" in e["reason"],
        count=2,
    )
    # 5 a second plus one summary per key per window (1 s), and the closing summary
    assert len(rows) <= 2 * 5 * (elapsed + 2) + 2, (len(rows), elapsed)
    deadline = time.monotonic() + 10
    while _written(rows) < sum(refusals.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = [
            e
            for e in lstack.audit_events("channel.deny")
            if e["source"] == source and "too many channels" in e["reason"]
        ]
    assert _written(rows) == sum(refusals.values())


def test_channel_open_close_loop_audit_bounded(lstack: GatewayStack) -> None:
    """500 session channels opened and closed one after another: every one is
    counted in the audit log, in a bounded number of rows."""
    client = _paramiko(lstack, lstack.users["carol"])
    transport = _transport(client)
    source = _source(transport)
    started = time.monotonic()
    try:
        for _ in range(500):
            transport.open_session(timeout=10).close()
        elapsed = time.monotonic() - started
    finally:
        client.close()
    deadline = time.monotonic() + 10
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = [e for e in lstack.audit_events("channel.request") if e["source"] == source]
        if _written(rows) >= 500:
            break
        time.sleep(0.1)
    assert _written(rows) == 500
    assert len(rows) <= 2 * (elapsed + 2) + 1, (len(rows), elapsed)


def test_env_flood_refuses_the_session(lstack: GatewayStack) -> None:
    """5,000 env requests on one channel: the 33rd on are refused and the session with
    them (fail closed: a dropped GPUHOP_DATA would skip a residency check)."""
    rita = lstack.users["rita"]
    client = _paramiko(lstack, rita, "rita+sg-1")
    try:
        chan = _transport(client).open_session(timeout=10)
        for i in range(5_000):
            chan.set_environment_variable(f"V{i}", "x" * 64)
        with contextlib.suppress(paramiko.SSHException):
            chan.exec_command("echo ran")
        out = chan.makefile().read()
        err = chan.makefile_stderr().read()
        assert out == b""
        assert b"too many environment variables on this channel (limit 32, 64 KiB)" in err
        # within the limit, the same client runs
        _, ok, _ = client.exec_command("echo ran")
        assert ok.read() == b"ran\n"
    finally:
        client.close()
    rows = lstack.wait_audit_events(
        "channel.deny", lambda e: e["user"] == "rita" and e["request"] == "env"
    )
    assert len(rows) == 1


def test_env_bytes_bounded(lstack: GatewayStack) -> None:
    """Few variables but large ones: past 64 KiB in all the session is refused too."""
    client = _paramiko(lstack, lstack.users["rita"], "rita+sg-1")
    try:
        chan = _transport(client).open_session(timeout=10)
        for i in range(8):
            chan.set_environment_variable(f"BIG{i}", "x" * 16_000)
        with contextlib.suppress(paramiko.SSHException):
            chan.exec_command("echo ran")
        assert chan.makefile().read() == b""
        assert b"64 KiB" in chan.makefile_stderr().read()
    finally:
        client.close()


def _last_recording(stack: GatewayStack, since: float) -> Path:
    casts = [p for p in (stack.root / "recordings").glob("*.cast") if p.stat().st_mtime >= since]
    return max(casts, key=lambda p: p.stat().st_mtime)


def test_window_change_flood_bounded(lstack: GatewayStack) -> None:
    """5,000 window changes: at most 10 a second reach the host and the recording, and
    the last size still wins."""
    rita = lstack.users["rita"]
    since = time.time() - 1
    client = _paramiko(lstack, rita, "rita+sg-1")
    try:
        chan = _transport(client).open_session(timeout=10)
        chan.get_pty(width=80, height=24)
        chan.invoke_shell()
        started = time.monotonic()
        for i in range(5_000):
            chan.resize_pty(width=20 + i % 200, height=10 + i % 50)
        chan.resize_pty(width=123, height=45)
        elapsed = time.monotonic() - started
        time.sleep(1.5)  # the held-back latest size goes out within a second
        chan.sendall(b"stty size; exit\n")
        out = b""
        deadline = time.monotonic() + 15
        while not chan.exit_status_ready() and time.monotonic() < deadline:
            if chan.recv_ready():
                out += chan.recv(65536)
            time.sleep(0.02)
        while chan.recv_ready():
            out += chan.recv(65536)
        assert b"45 123" in out, out[-500:]
    finally:
        client.close()
    time.sleep(0.5)
    cast = _last_recording(lstack, since).read_text()
    assert "45 123" in cast
    resizes = cast.count('"r", ')
    assert resizes <= 10 * (elapsed + 3), (resizes, elapsed)


# -- audit floods --


def test_refused_channel_flood_is_coalesced(lstack: GatewayStack) -> None:
    """3,000 refused direct-tcpip opens: every one refused with its reason, the audit log
    gets a bounded number of rows whose counts add up to exactly 3,000."""
    client = _paramiko(lstack, lstack.users["carol"])
    transport = _transport(client)
    source = _source(transport)
    started = time.monotonic()
    refused = 0
    try:
        for i in range(3_000):
            with contextlib.suppress(paramiko.ChannelException):
                transport.open_channel(
                    "direct-tcpip", ("127.0.0.1", 9 + i % 3), ("127.0.0.1", 0), timeout=10
                )
                continue
            refused += 1
        elapsed = time.monotonic() - started
    finally:
        client.close()
    assert refused == 3_000
    deadline = time.monotonic() + 10
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = [e for e in lstack.audit_events("channel.deny") if e["source"] == source]
        if _written(rows) >= 3_000:
            break
        time.sleep(0.1)
    assert _written(rows) == 3_000
    # three reasons (ports 9, 10, 11): per second 5 first rows and their summaries
    assert len(rows) <= 2 * 5 * (elapsed + 2) + 3, (len(rows), elapsed)
    assert any(r.get("coalesced") for r in rows)


def test_env_images_host_list_bounded(lstack: GatewayStack) -> None:
    """``gpuhop-env images`` naming 20,000 hosts: refused in one line, nothing audited
    per host; 200 unknown hosts: refused each, audited in a bounded number of rows."""
    carol = lstack.users["carol"]
    client = _paramiko(lstack, carol)
    try:
        names = " ".join(f"h{i}" for i in range(20_000))
        _, out, err = client.exec_command(f"gpuhop-env images {names}")
        message = err.read().decode()
        assert out.channel.recv_exit_status() == 2
        assert message.strip() == (
            "gpuhop-env: too many hosts named (20000); at most 256 per request"
        )
        names = " ".join(f"u{i}" for i in range(200))
        source = _source(_transport(client))
        _, out, _ = client.exec_command(f"gpuhop-env images {names}")
        reply = out.read()
        assert reply.count(b"unknown host") == 200
    finally:
        client.close()
    deadline = time.monotonic() + 10
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = [
            e
            for e in lstack.audit_events("channel.deny")
            if e["source"] == source and e["request"] == "gpuhop-env images"
        ]
        if _written(rows) >= 200:
            break
        time.sleep(0.1)
    assert _written(rows) == 200
    assert len(rows) <= 12, len(rows)
    assert not [e for e in lstack.audit_events("channel.deny") if e.get("host") == "h1"]


# -- unauthenticated connections --


def _connect_from(source: str, port: int) -> socket.socket:
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def test_preauth_flood_refused_beyond_limits(tmp_path: Path) -> None:
    """500 unauthenticated TCP connections from 25 addresses: 60 get the SSH banner, the
    rest one line saying why; a logged-in user keeps working; a new one is refused until
    the login grace time frees the places; the refusals cost a handful of audit rows."""
    stack = build_stack(
        tmp_path,
        extra_gateway="max_startups = 60\nmax_startups_per_source = 4\nlogin_timeout_s = 6.0",
    )
    stack.start_gateway()
    flood: list[socket.socket] = []
    try:
        carol = _paramiko(stack, stack.users["carol"])  # logged in before the flood
        started = time.monotonic()
        for n in range(500):
            flood.append(_connect_from(f"127.0.1.{1 + n // 20}", stack.port))
        first = [s.recv(4096) for s in flood]
        banners = [f for f in first if f.startswith(b"SSH-2.0-gpuhop")]
        refusals = [f.split(b"\r\n")[0] for f in first if f.startswith(b"gpuhop: too many")]
        assert time.monotonic() - started < 5  # all of it inside the grace time
        assert (len(banners), len(refusals)) == (60, 440), set(first) - set(banners)
        per_source = {
            b"gpuhop: too many unauthenticated connections from 127.0.1.%d (limit 4); "
            b"try again later" % i
            for i in range(1, 26)
        }
        total = (
            b"gpuhop: too many unauthenticated connections to the gateway (limit 60); "
            b"try again later"
        )
        assert set(refusals) <= {total, *per_source}
        assert total in refusals and set(refusals) & per_source
        for sock, got in zip(flood, first, strict=True):
            if not got.startswith(b"SSH-2.0-"):
                sock.close()  # told why, the client leaves; the admitted 60 stay, idle
        # a user already in keeps working
        _, out, _ = carol.exec_command("")
        assert b"sg-1" in out.read()
        # a new connection is told why it is refused, in one line OpenSSH shows
        alice = stack.users["alice"]
        refused = stack.run(stack.gateway_command(alice, "true"))
        assert refused.returncode == 255
        assert (
            b"Received disconnect from 127.0.0.1 port %d:12: too many unauthenticated "
            b"connections to the gateway (limit 60); try again later" % stack.port
        ) in refused.stderr, refused.stderr
        # the login grace time closes the idle ones; then users get in again
        time.sleep(max(0.0, started + 6.5 - time.monotonic()))
        ok = stack.run(stack.gateway_command(alice, "true"))
        assert ok.returncode == 0, ok.stderr
        carol.close()
    finally:
        for s in flood:
            s.close()
        stack.close()
    rows = stack.audit_events("connection.refused")
    assert _written(rows) == 441
    assert len(rows) <= 4, rows
