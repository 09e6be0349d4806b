"""Forwarded connections at volume, a second client library, and multi-worker serving."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import subprocess
import sys
import time

import asyncssh
import paramiko
import pytest

from tests.integration.gwstack import GatewayStack

pytestmark = pytest.mark.openssh


async def _connect(stack: GatewayStack, user: str = "alice") -> asyncssh.SSHClientConnection:
    u = stack.users[user]
    key = asyncssh.read_private_key(str(u.key))
    keys = [(key, asyncssh.read_certificate(str(u.cert)))] if u.cert else [key]
    return await asyncssh.connect(
        "127.0.0.1",
        stack.port,
        username=user,
        client_keys=keys,
        known_hosts=str(stack.known_hosts),
        agent_path=None,
        config=None,
    )


@pytest.mark.slow
async def test_host_closing_first_always_closes_the_users_channel(stack: GatewayStack) -> None:
    """1,000 forwards whose host side hangs up first: none stays open for the user."""
    conn = await _connect(stack)
    sem = asyncio.Semaphore(40)
    closed = 0

    async def one() -> None:
        nonlocal closed
        async with sem:
            reader, writer = await conn.open_connection("sg-1", 22)
            banner = await asyncio.wait_for(reader.readline(), 10)
            assert banner.startswith(b"SSH-2.0-")
            writer.write(b"not an ssh client\r\n")  # sshd hangs up on a bad identification
            await asyncio.wait_for(reader.read(), 10)  # EOF from the host side
            await asyncio.wait_for(writer.channel.wait_closed(), 10)
            closed += 1

    try:
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(1000))), 240)
    finally:
        conn.close()
        await conn.wait_closed()
    assert closed == 1000


def _paramiko_key(path: str, cert: str | None) -> paramiko.PKey:
    key = paramiko.Ed25519Key.from_private_key_file(path)
    if cert is not None:
        key.load_certificate(cert)
    return key


def test_paramiko_through_the_jump(stack: GatewayStack) -> None:
    """paramiko as a second client: gateway leg, direct-tcpip, then the host leg inside."""
    alice = stack.users["alice"]
    assert alice.cert is not None
    key = _paramiko_key(str(alice.key), str(alice.cert))
    known = paramiko.HostKeys(str(stack.plain_known_hosts()))

    gw = paramiko.SSHClient()
    gw.set_missing_host_key_policy(paramiko.RejectPolicy())
    gw._host_keys = known  # pinned: reject anything not in the stack's known_hosts
    gw.connect(
        "127.0.0.1",
        stack.port,
        username="alice",
        pkey=key,
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )
    try:
        transport = gw.get_transport()
        assert transport is not None
        chan = transport.open_channel("direct-tcpip", ("sg-1", 22), ("127.0.0.1", 0))
        host = paramiko.SSHClient()
        host.set_missing_host_key_policy(paramiko.RejectPolicy())
        host._host_keys = known
        host.connect(
            "sg-1",
            22,
            username="root",
            pkey=key,
            sock=chan,
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
        )
        try:
            _, stdout, stderr = host.exec_command("echo via-paramiko; echo e >&2; exit 3")
            assert stdout.read() == b"via-paramiko\n"
            assert stderr.read() == b"e\n"
            assert stdout.channel.recv_exit_status() == 3
        finally:
            host.close()
    finally:
        gw.close()


def test_workers_share_one_port_and_one_chain(fresh_stack: GatewayStack) -> None:
    fresh_stack.start_gateway("--workers", "2")
    user = fresh_stack.users["alice"]

    def one(i: int) -> int:
        cmd = fresh_stack.jump_command(user, "sg-1" if i % 2 else "my-1", f"exit {i % 3}")
        return fresh_stack.run(cmd, timeout=60).returncode

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # both workers have started
        if len({e["pid"] for e in fresh_stack.audit_events("gateway.start")}) == 2:
            break
        time.sleep(0.1)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(one, range(30)))
    assert codes == [i % 3 for i in range(30)]
    assert fresh_stack.stop_gateway(signal.SIGTERM) == 0
    events = fresh_stack.audit_events()
    assert len({e["pid"] for e in events if e["kind"] == "gateway.start"}) == 2
    assert len([e for e in events if e["kind"] == "session.end"]) == 30
    assert len([e for e in events if e["kind"] == "gateway.stop"]) == 2
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
    assert verify.returncode == 0, verify.stderr
