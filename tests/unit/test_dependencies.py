"""`pip install gpuhop` is the client: it needs only the base dependencies of pyproject.toml.

The gateway's own dependencies are the `gateway` extra, paramiko is a test dependency, and the
client never imports the gateway or the simulated hosts. Checked twice: every import statement
in client/ (function-local ones included) names the standard library, the client or a base
dependency; and every client module imports with the gateway and the extra's modules blocked.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway.entry import GATEWAY_MODULES, MISSING_EXTRA

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
NOT_THE_CLIENTS = {"gateway", "gpuhop_sim", "tests"}


def _names(specs: Iterable[str]) -> set[str]:
    return {canonicalize_name(Requirement(spec).name) for spec in specs}


BASE = _names(PROJECT["dependencies"])
GATEWAY = _names(EXTRAS["gateway"])
TEST = _names(EXTRAS["test"])


def _required(name: str, extras: frozenset[str]) -> Iterator[tuple[str, frozenset[str]]]:
    for spec in importlib.metadata.requires(name) or []:
        req = Requirement(spec)
        wanted = req.marker is None or any(
            req.marker.evaluate({"extra": extra}) for extra in ("", *extras)
        )
        if wanted:
            yield canonicalize_name(req.name), frozenset(req.extras)


def _closure(specs: Iterable[str]) -> set[str]:
    """These requirements and every distribution they pull in, as installed here."""
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in map(Requirement, specs)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:  # bounded: each (distribution, extras) pair is expanded once
        item = todo.pop()
        if item not in seen:
            seen.add(item)
            todo.extend(_required(*item))
    return {name for name, _ in seen}


BASE_CLOSURE = _closure(PROJECT["dependencies"])


def _distributions(module: str) -> set[str]:
    return {
        canonicalize_name(d) for d in importlib.metadata.packages_distributions().get(module, [])
    }


def _third_party(module: str) -> bool:
    return module not in sys.stdlib_module_names and module not in ("client", "__main__")


def _client_imports() -> dict[str, set[str]]:
    """Top-level module → the client files that import it (every import statement)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "client").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _blocked_modules() -> set[str]:
    """Top-level modules of the gateway and test extras' distributions the client may not use."""
    outside = (_closure(EXTRAS["gateway"]) | _closure(EXTRAS["test"])) - BASE_CLOSURE
    modules = importlib.metadata.packages_distributions()
    return NOT_THE_CLIENTS | {
        module
        for module, dists in modules.items()
        if {canonicalize_name(d) for d in dists} <= outside
    }


_IMPORT_ALL = """
import importlib, json, pkgutil, sys
before = set(sys.modules)  # what start-up loaded (site, .pth files)
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # `import name` now raises ImportError
import client
for info in pkgutil.walk_packages(client.__path__, "client."):
    if not info.name.endswith(".__main__"):
        importlib.import_module(info.name)
loaded = {m.split(".")[0] for m, mod in sys.modules.items() if mod and m not in before}
print(json.dumps(sorted(loaded)))
"""


def test_the_gateway_and_test_only_libraries_are_not_base_dependencies() -> None:
    server_side = {"fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg", "prometheus-client"}
    assert server_side <= GATEWAY
    assert "paramiko" in TEST
    assert not (server_side | {"paramiko", "pydantic-settings", "structlog"}) & BASE
    assert not GATEWAY & TEST


def test_every_client_import_is_the_standard_library_or_a_base_dependency() -> None:
    imports = _client_imports()
    assert "asyncssh" in imports  # the scan sees function-local imports too
    wrong = {
        module: sorted(files)
        for module, files in imports.items()
        if _third_party(module) and (module in NOT_THE_CLIENTS or not _distributions(module) & BASE)
    }
    assert wrong == {}


def test_the_client_does_not_import_cryptography_itself() -> None:
    assert "cryptography" not in _client_imports()  # asyncssh makes the client's key


def test_every_client_module_imports_without_the_gateway_extra() -> None:
    blocked = _blocked_modules()
    assert {"fastapi", "sqlalchemy", "uvicorn", "psycopg", "paramiko", "gateway"} <= blocked
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, ",".join(sorted(blocked))],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert "client" in loaded
    assert not set(loaded) & blocked
    installed = [m for m in loaded if _third_party(m) and _distributions(m)]
    assert "httpx" in installed
    outside = [m for m in installed if not _distributions(m) & BASE_CLOSURE]
    assert outside == []


@pytest.mark.parametrize("dist", sorted(GATEWAY - {"uvloop"}))  # uvloop: used when installed
def test_the_gateway_entry_checks_every_library_of_the_extra(dist: str) -> None:
    provided = {
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if dist in {canonicalize_name(d) for d in dists}
    }
    assert provided & set(GATEWAY_MODULES)


def test_gpuhop_gateway_without_the_extra_prints_one_line_and_fails() -> None:
    script = (
        "import sys; sys.modules['fastapi'] = None\n"
        "from gateway import entry\n"
        "try:\n    entry.main()\n"
        "finally:\n    print(sorted(m for m in sys.modules if m.startswith('gateway')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert result.stderr == MISSING_EXTRA + "\n"
    assert result.stdout.strip() == "['gateway', 'gateway.entry']"
