"""Fixtures for a real gateway subprocess in front of real OpenSSH hosts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing_peer
from tests.integration import gwstack
from tests.integration.gwstack import GatewayStack
from tests.integration.pg import STORAGE_BACKEND, PgServer, start_postgres

ROLES = """
[[roles]]
name = "dev"
hosts = ["*"]
accounts = ["root"]
modes = ["passthrough"]

[[roles]]
name = "rec"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]
forwarding = true
forward_ports = ["1024-65535"]

[[roles]]
name = "sg-only"
hosts = ["region:sg"]
accounts = ["root"]
modes = ["passthrough"]
"""


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One private PostgreSQL for the run (skips, or fails under CI, if it is missing)."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session", autouse=True)
def _stack_storage(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under GPUHOP_TEST_STORAGE=postgres, every GatewayStack gets a database of its own."""
    if STORAGE_BACKEND != "postgres":
        yield
        return
    server: PgServer = request.getfixturevalue("pg_server")
    gwstack.database_factory = server.create_database
    try:
        yield
    finally:
        gwstack.database_factory = None


def need_openssh() -> None:
    missing = [b for b in ("ssh", "scp", "ssh-keygen") if shutil.which(b) is None]
    if not os.path.exists("/usr/sbin/sshd"):
        missing.append("sshd")
    if missing:
        missing_peer(f"OpenSSH missing: {', '.join(missing)}")


def build_stack(root: Path, extra_gateway: str = "") -> GatewayStack:
    need_openssh()
    stack = GatewayStack(root, extra_gateway=extra_gateway)
    stack.ca()  # creates the user CA before hosts need its public key
    stack.add_host("sg-1")
    stack.add_host("my-1")
    stack.add_user("alice")
    stack.add_user("bob")
    stack.add_user("carol", cert=False)  # plain registered key, no certificate
    stack.add_user("mallory", cert=False)  # never registered
    stack.add_user("rita")  # recorded sessions
    stack.write_config(
        ROLES, {"alice": ["dev"], "bob": ["sg-only"], "carol": ["dev"], "rita": ["rec"]}
    )
    return stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    s = build_stack(tmp_path_factory.mktemp("stack"))
    try:
        s.start_gateway()
        yield s
    finally:
        s.close()


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[GatewayStack]:
    """A stack of one's own, for tests that kill or reconfigure the gateway."""
    s = build_stack(tmp_path)
    try:
        yield s
    finally:
        s.close()
