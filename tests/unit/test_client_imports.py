"""``client`` never imports ``gateway``: the API is its only contract with the gateway."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import importlib, pkgutil, sys
import client
failed = []
for info in pkgutil.walk_packages(client.__path__, "client."):
    try:
        importlib.import_module(info.name)
    except ImportError as exc:
        failed.append(f"{info.name}: {exc}")
leaked = sorted(m for m in sys.modules if m == "gateway" or m.startswith("gateway."))
print("LEAKED", leaked)
print("FAILED", failed)
"""


def test_no_client_module_loads_the_gateway_package() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    assert "LEAKED []" in result.stdout, result.stdout
    assert "FAILED []" in result.stdout, result.stdout


def test_run_command_imports_stay_lean() -> None:
    """``gpuhop run --host H`` must not pay for the API client, pydantic, rich or keyring."""
    script = (
        "import sys; import client.cli, client.run, client.identity, client.workdir;"
        "print(sorted(m for m in ('httpx', 'pydantic', 'rich', 'keyring') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
