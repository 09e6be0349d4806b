"""``/v1/ready`` follows what a load balancer needs to know; ``/v1/health`` stays up.

A real gateway subprocess on a real PostgreSQL that the test stops and starts
again, and one draining a live session through real OpenSSH after SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.gwstack import GatewayStack
from tests.integration.pg import PgServer, start_postgres

ROLE = '[[roles]]\nname = "dev"\nhosts = ["*"]\naccounts = ["root"]\n'


def _get(stack: GatewayStack, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{stack.api_port}{path}", trust_env=False, timeout=5)


def _wait_ready(stack: GatewayStack, status: int, within_s: float) -> tuple[float, httpx.Response]:
    """Seconds until ``/v1/ready`` answers ``status``; ``/v1/health`` is 200 all along."""
    started = time.monotonic()
    while True:
        assert _get(stack, "/v1/health").status_code == 200
        ready = _get(stack, "/v1/ready")
        waited = time.monotonic() - started
        if ready.status_code == status:
            return waited, ready
        assert waited < within_s, f"/v1/ready still {ready.status_code}: {ready.text}"
        time.sleep(0.2)


@pytest.fixture
def pg() -> Iterator[PgServer]:
    """A PostgreSQL of this test's own, to stop and start."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_stack(tmp_path: Path, pg: PgServer) -> Iterator[GatewayStack]:
    stack = GatewayStack(tmp_path, storage_url=pg.create_database())
    stack.add_user("alice", cert=False)
    stack.write_config(ROLE, {"alice": ["dev"]})
    try:
        yield stack
    finally:
        stack.close()


@pytest.mark.postgres
def test_ready_follows_postgresql(pg_stack: GatewayStack, pg: PgServer) -> None:
    pg_stack.start_gateway()
    _wait_ready(pg_stack, 200, 10)
    pg.stop()
    waited, down = _wait_ready(pg_stack, 503, 10)
    assert waited < 10
    assert down.json()["status"] == "unready"
    assert down.json()["reason"] == "storage_unreachable"
    assert "postgres" not in down.text  # no database address or user to anonymous callers
    pg.start()
    _, up = _wait_ready(pg_stack, 200, 30)
    assert up.json() == {**up.json(), "status": "ready", "reason": None}


@pytest.mark.openssh
def test_draining_gateway_is_unready_but_alive(fresh_stack: GatewayStack) -> None:
    fresh_stack.start_gateway()
    assert _get(fresh_stack, "/v1/ready").status_code == 200
    user = fresh_stack.users["alice"]
    session = subprocess.Popen(
        fresh_stack.jump_command(user, "sg-1", "sleep 3; echo done"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    fresh_stack.wait_audit_events("session.start", lambda e: e["host"] == "sg-1")
    assert fresh_stack.proc is not None
    fresh_stack.proc.send_signal(signal.SIGTERM)
    _, draining = _wait_ready(fresh_stack, 503, 5)
    assert draining.json()["reason"] == "draining"
    out, err = session.communicate(timeout=20)
    assert (session.returncode, out) == (0, b"done\n"), err
    assert fresh_stack.stop_gateway() == 0
