"""One shell may export the client's and the gateway's variables at once.

The client reads ``GPUHOP_GATEWAY`` (a URL), ``GPUHOP_TOKEN`` and other bare
``GPUHOP_*`` names; the gateway reads only ``GPUHOP_GATEWAY__<FIELD>`` and
``GPUHOP_CONFIG``. Both commands run here as real subprocesses with the other
side's variables exported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.gwstack import GatewayStack

CLIENT_ENV = {
    "GPUHOP_GATEWAY": "https://gw.example:8080",
    "GPUHOP_TOKEN": "gph_not_a_real_token",
    "GPUHOP_SSH": "ssh",
    "GPUHOP_KEEPALIVE_S": "5",
    "GPUHOP_CONNECT_TIMEOUT_S": "10",
    "GPUHOP_HTTP_TIMEOUT_S": "15",
}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False
    )


def _gateway(stack: GatewayStack, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(
        [sys.executable, "-m", "gateway.cli", *args, "--config", str(stack.config)], CLIENT_ENV
    )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[GatewayStack]:
    s = GatewayStack(tmp_path)
    s.add_user("alice", cert=False)
    s.write_config(
        '[[roles]]\nname = "dev"\nhosts = ["*"]\naccounts = ["root"]\n', {"alice": ["dev"]}
    )
    yield s
    s.close()


@pytest.mark.parametrize(
    "args",
    [
        ["check-config"],
        ["db", "upgrade"],
        ["db", "current"],
        ["token", "create", "--user", "alice"],
        ["admin", "users", "ls"],
    ],
    ids=" ".join,
)
def test_gateway_commands_ignore_the_clients_variables(
    stack: GatewayStack, args: list[str]
) -> None:
    assert _gateway(stack, "db", "upgrade").returncode == 0
    done = _gateway(stack, *args)
    assert done.returncode == 0, done.stderr
    assert "GPUHOP_GATEWAY" not in done.stderr


def test_gateway_still_reads_its_nested_variables(stack: GatewayStack) -> None:
    done = _run(
        [sys.executable, "-m", "gateway.cli", "check-config", "--config", str(stack.config)],
        {**CLIENT_ENV, "GPUHOP_GATEWAY__SSH_PORT": "lots"},
    )
    assert done.returncode != 0
    assert "gateway.ssh_port (from GPUHOP_GATEWAY__SSH_PORT)" in done.stderr


def test_serve_and_client_side_by_side(
    stack: GatewayStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A served gateway with the client's names exported; the client with the gateway's."""
    for name, value in CLIENT_ENV.items():
        monkeypatch.setenv(name, value)
    stack.start_gateway()
    token = _gateway(stack, "token", "create", "--user", "alice").stdout.strip()
    gateway_env = {
        "GPUHOP_CONFIG": str(stack.config),
        "GPUHOP_GATEWAY__STORAGE_URL": stack.database_url,
        "GPUHOP_GATEWAY__SSH_PORT": "2222",
        "GPUHOP_GATEWAY__LOG_FORMAT": "json",
        "GPUHOP_GATEWAY": f"http://127.0.0.1:{stack.api_port}",
        "GPUHOP_TOKEN": token,
    }
    done = _run([sys.executable, "-m", "client.cli", "hosts", "--json"], gateway_env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
