"""Two gateway replicas on one PostgreSQL, in front of the same real sshd hosts.

Each replica is a real ``gpuhop-gateway serve`` process with the same config
(ports 0, so each binds its own). Sessions are real ``ssh -J`` runs spread over
both. The audit chain and the session records live in one PostgreSQL database.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ROLES, need_openssh
from tests.integration.gwstack import GatewayStack
from tests.integration.pg import PgServer, start_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.openssh, pytest.mark.slow]


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    api_port: int
    log: Path


def make_stack(root: Path, storage_url: str) -> GatewayStack:
    need_openssh()
    stack = GatewayStack(root, storage_url=storage_url)
    stack.ca()
    stack.add_host("sg-1")
    stack.add_host("my-1")
    stack.add_user("alice")  # passthrough, certificate
    stack.add_user("rita")  # recorded
    stack.write_config(ROLES, {"alice": ["dev"], "rita": ["rec"]})
    return stack


def start_replica(stack: GatewayStack, name: str, timeout: float = 30.0) -> Replica:
    ready = stack.root / f"ready-{name}.json"
    log = stack.root / f"gateway-{name}.log"
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(stack.config)]
    with log.open("ab") as out:
        proc = subprocess.Popen([*cmd, "--ready-file", str(ready)], stdout=out, stderr=out)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            info = json.loads(ready.read_text())
            return Replica(name, proc, int(info["ssh_port"]), int(info["api_port"]), log)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"replica {name} not ready: {log.read_text(errors='replace')[-2000:]}")


def stop_replica(replica: Replica) -> int | None:
    if replica.proc.poll() is None:
        replica.proc.send_signal(signal.SIGTERM)
        try:
            replica.proc.wait(20)
        except subprocess.TimeoutExpired:
            replica.proc.kill()
            replica.proc.wait(5)
    return replica.proc.returncode


@pytest.fixture
def replicas(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], tuple[GatewayStack, list[Replica]]]]:
    """``replicas(url)``: a stack on ``url`` with two running replicas, torn down after."""
    started: list[Replica] = []
    stacks: list[GatewayStack] = []

    def make(url: str) -> tuple[GatewayStack, list[Replica]]:
        stack = make_stack(tmp_path, url)
        stacks.append(stack)
        pair = [start_replica(stack, "a"), start_replica(stack, "b")]
        started.extend(pair)
        write_known_hosts(stack, pair)
        return stack, pair

    try:
        yield make
    finally:
        for replica in started:
            stop_replica(replica)
        for stack in stacks:
            stack.close()


def write_known_hosts(stack: GatewayStack, pair: list[Replica]) -> None:
    """known_hosts for both replicas (they share the gateway's host key and host CA)."""
    stack.port = pair[0].port
    stack._write_known_hosts()
    lines = stack.known_hosts.read_text().splitlines()
    key = lines[0].split(" ", 1)[1]
    lines += [f"[127.0.0.1]:{r.port} {key}" for r in pair[1:]]
    stack.known_hosts.write_text("\n".join(lines) + "\n")


def ssh_configs(stack: GatewayStack, pair: list[Replica]) -> dict[tuple[str, str], Path]:
    """One OpenSSH config per (user, replica) in which ``gw`` is that replica."""
    configs = {}
    for replica in pair:
        stack.port = replica.port
        for user in stack.users.values():
            cfg = stack.root / f"ssh_config.{user.name}.{replica.name}"
            cfg.write_text(stack.ssh_config(user).read_text())
            configs[user.name, replica.name] = cfg
    return configs


def jump(cfg: Path, host: str, command: str) -> list[str]:
    """``ssh -F CFG -J gw root@host command``."""
    return ["ssh", "-F", str(cfg), "-J", "gw", "-T", f"root@{host}", command]


def admin_token(stack: GatewayStack) -> str:
    cmd = [sys.executable, "-m", "gateway.cli", "token", "create", "--config", str(stack.config),
           "--user", "ops", "--scope", "admin"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


def api_sessions(replica: Replica, token: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{replica.api_port}/v1/sessions"
    response = httpx.get(
        url, params={"limit": 500}, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_after"] is None
    sessions: list[dict[str, Any]] = body["sessions"]
    return sessions


def wait_for_events(
    stack: GatewayStack, kind: str, count: int, timeout: float
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        events = stack.audit_events(kind)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def verify_chain(stack: GatewayStack) -> str:
    cmd = [sys.executable, "-m", "gateway.cli", "audit", "verify", "--database", stack.database_url]
    done = subprocess.run(cmd, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


def once_each(events: list[dict[str, Any]]) -> set[str]:
    ids = collections.Counter(str(e["session_id"]) for e in events)
    assert all(n == 1 for n in ids.values()), [i for i, n in ids.items() if n > 1]
    return set(ids)


def test_two_replicas_200_sessions(
    pg_server: PgServer, replicas: Callable[[str], tuple[GatewayStack, list[Replica]]]
) -> None:
    stack, pair = replicas(pg_server.create_database())
    configs = ssh_configs(stack, pair)
    users = ["alice", "rita"]  # passthrough and recorded jumps

    def one(i: int) -> tuple[int, bytes]:
        cfg = configs[users[(i // 2) % 2], pair[i % 2].name]
        cmd = jump(cfg, "sg-1" if i % 3 else "my-1", "true")
        done = subprocess.run(cmd, capture_output=True, timeout=90)
        return done.returncode, done.stderr

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(200)))
    elapsed = time.monotonic() - started
    assert [r[0] for r in results] == [0] * 200, [r for r in results if r[0]][:3]

    starts = wait_for_events(stack, "session.start", 200, 30)
    ends = wait_for_events(stack, "session.end", 200, 30)
    assert len(starts) == 200 and len(ends) == 200
    assert once_each(starts) == once_each(ends)
    assert len({e["pid"] for e in stack.audit_events("gateway.start")}) == 2
    assert "audit chain ok" in verify_chain(stack)

    token = admin_token(stack)
    listed = [api_sessions(replica, token) for replica in pair]
    for sessions in listed:
        assert {s["id"] for s in sessions} == once_each(starts)
        assert not any(s["live"] for s in sessions)
    print(f"200 sessions over 2 replicas in {elapsed:.1f} s")


TICKS = "for i in $(seq {n}); do echo tick$i; sleep 0.5; done; echo done"


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PgServer]:
    """A server this module may stop and restart without disturbing other tests."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.close()


def test_postgres_restart_during_live_sessions(
    own_pg: PgServer, replicas: Callable[[str], tuple[GatewayStack, list[Replica]]]
) -> None:
    stack, pair = replicas(own_pg.create_database())
    configs = ssh_configs(stack, pair)
    users = ["alice", "rita"]  # passthrough and recorded
    live: list[tuple[int, subprocess.Popen[bytes]]] = []
    for k in range(10):
        ticks = 6 + (k % 5) * 2  # 3 to 7 s: some end while the database is down
        cfg = configs[users[(k // 2) % 2], pair[k % 2].name]
        cmd = jump(cfg, "sg-1", TICKS.format(n=ticks))
        live.append((ticks, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    late: list[subprocess.Popen[bytes]] = []
    try:
        acked = wait_for_events(stack, "session.start", 10, 30)
        assert len(acked) == 10  # every live session's start was committed before it ran
        own_pg.stop()
        down = time.monotonic()
        for replica in pair:  # started while the database is down: they wait for it
            cmd = jump(configs["alice", replica.name], "my-1", "echo late")
            late.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        time.sleep(3.0)
        own_pg.start()
        outage = time.monotonic() - down
        for ticks, proc in live:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            expected = "".join(f"tick{i}\n" for i in range(1, ticks + 1)) + "done\n"
            assert out.decode() == expected  # the relay never paused for the audit log
        for proc in late:
            out, err = proc.communicate(timeout=60)
            assert (proc.returncode, out) == (0, b"late\n"), err
    finally:
        for proc in [p for _, p in live] + late:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    starts = wait_for_events(stack, "session.start", 12, 30)
    ends = wait_for_events(stack, "session.end", 12, 30)
    assert once_each(starts) >= once_each(acked)  # nothing acknowledged was lost
    assert once_each(starts) == once_each(ends) and len(starts) == 12
    assert "audit chain ok" in verify_chain(stack)
    logs = "".join(r.log.read_text(errors="replace") for r in pair)
    assert "audit database unavailable; buffering events" in logs
    assert "audit database back" in logs

    token = admin_token(stack)
    deadline = time.monotonic() + 30
    while True:  # session records written during the outage are retried
        sessions = api_sessions(pair[1], token)
        if not any(s["live"] for s in sessions) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {s["id"] for s in sessions} == once_each(starts)
    assert not any(s["live"] for s in sessions)
    print(f"PostgreSQL down for {outage:.1f} s; 12 sessions, none lost")


# -- one replica's sessions, reached from the other ------------------------------------

TIMEOUT_S = 3.0  # replica_timeout_s of the stacks below: heartbeats every second


@pytest.fixture
def fast_replicas(
    tmp_path: Path, pg_server: PgServer
) -> Iterator[tuple[GatewayStack, list[Replica]]]:
    """Two replicas whose heartbeats time out after ``TIMEOUT_S``."""
    need_openssh()
    stack = GatewayStack(
        tmp_path,
        storage_url=pg_server.create_database(),
        extra_gateway=f"replica_timeout_s = {TIMEOUT_S}\n",
    )
    stack.ca()
    stack.add_host("sg-1")
    stack.add_user("rita")  # recorded
    stack.write_config(ROLES, {"rita": ["rec"]})
    pair = [start_replica(stack, "a"), start_replica(stack, "b")]
    write_known_hosts(stack, pair)
    try:
        yield stack, pair
    finally:
        for replica in pair:
            stop_replica(replica)
        stack.close()


def live_session_on(stack: GatewayStack, replica: Replica, token: str) -> tuple[str, Any]:
    """A recorded session that runs for a minute through ``replica``: (id, its ssh)."""
    cfg = ssh_configs(stack, [replica])["rita", replica.name]
    proc = subprocess.Popen(
        jump(cfg, "sg-1", TICKS.format(n=120)), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        live = [s for s in api_sessions(replica, token) if s["live"] and s["host"] == "sg-1"]
        if live:
            return str(live[0]["id"]), proc
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the session did not start")


def record_of(replica: Replica, token: str, session_id: str) -> dict[str, Any]:
    return next(s for s in api_sessions(replica, token) if s["id"] == session_id)


def test_kill_through_one_replica_ends_a_session_on_the_other(
    fast_replicas: tuple[GatewayStack, list[Replica]],
) -> None:
    stack, (a, b) = fast_replicas
    token = admin_token(stack)
    session_id, proc = live_session_on(stack, a, token)
    try:
        response = httpx.post(
            f"http://127.0.0.1:{b.api_port}/v1/sessions/{session_id}/kill",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        assert response.json() == {"session_id": session_id, "killed": False}
        asked = time.monotonic()
        proc.communicate(timeout=30)
        ended_in = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert ended_in < 5.0  # a polls its kill requests every second
    deadline = time.monotonic() + 10
    while record_of(b, token, session_id)["live"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not record_of(b, token, session_id)["live"]
    kills = [e for e in stack.audit_events("session.kill") if e["session_id"] == session_id]
    assert len(kills) == 1 and kills[0]["replica"].startswith(f"{socket.gethostname()}/")


def test_a_replica_killed_with_sigkill_has_its_sessions_closed_by_the_other(
    fast_replicas: tuple[GatewayStack, list[Replica]],
) -> None:
    stack, (a, b) = fast_replicas
    token = admin_token(stack)
    session_id, proc = live_session_on(stack, a, token)
    try:
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        killed = time.monotonic()
        deadline = killed + TIMEOUT_S + 10
        while record_of(b, token, session_id)["live"] and time.monotonic() < deadline:
            time.sleep(0.2)
        closed_in = time.monotonic() - killed
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    record = record_of(b, token, session_id)
    assert not record["live"], record
    assert record["error"].startswith("replica lost"), record
    assert record["cost_usd"] is not None
    # the dead replica's heartbeat timeout, plus at most one heartbeat round of b
    assert closed_in < TIMEOUT_S + TIMEOUT_S / 3 + 2.0, closed_in
    ends = [e for e in stack.audit_events("session.end") if e["session_id"] == session_id]
    assert len(ends) == 1 and ends[0]["reconciled"] is True
