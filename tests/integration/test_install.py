"""A fresh virtualenv: `pip install .` is a working client only; `.[gateway]` adds the gateway.

pip installs from the package index this machine is configured with (its cache makes a second
run quick); the sources are copied out of the checkout first, as the Dockerfile copies them,
so the build leaves nothing behind in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.entry import MISSING_EXTRA

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SERVER_SIDE = ("fastapi", "sqlalchemy", "uvicorn", "psycopg", "paramiko")
# Read before the autouse fixture points XDG_CACHE_HOME at a temp dir: keep pip's own cache.
PIP_CACHE = os.environ.get("PIP_CACHE_DIR") or str(
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pip"
)


def _run(*argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_CACHE_DIR": PIP_CACHE}
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env
    )


def _pip_install(bin_dir: Path, spec: str) -> None:
    done = _run(bin_dir / "python", "-m", "pip", "install", "-q", spec, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def _importable(bin_dir: Path, modules: tuple[str, ...]) -> list[str]:
    probe = (
        "import importlib.util, sys\n"
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    )
    return _run(bin_dir / "python", "-c", probe, *modules).stdout.split()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """gpuhop's distribution sources, outside the checkout."""
    dst = tmp_path / "src"
    dst.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)
    for package in ("gateway", "client"):
        shutil.copytree(ROOT / package, dst / package, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.mark.timeout(1800)
def test_the_client_installs_alone_and_the_extra_adds_the_gateway(
    source: Path, tmp_path: Path
) -> None:
    made = _run(sys.executable, "-m", "venv", tmp_path / "venv")
    assert made.returncode == 0, made.stderr
    bin_dir = tmp_path / "venv" / "bin"

    _pip_install(bin_dir, str(source))
    client = _run(bin_dir / "gpuhop", "--help")
    assert client.returncode == 0, client.stderr
    assert "Usage: gpuhop" in client.stdout
    assert _importable(bin_dir, SERVER_SIDE) == []
    assert _importable(bin_dir, ("gpuhop_sim",)) == []
    gateway = _run(bin_dir / "gpuhop-gateway", "--help")
    assert (gateway.returncode, gateway.stderr) == (1, MISSING_EXTRA + "\n")

    _pip_install(bin_dir, f"{source}[gateway]")
    gateway = _run(bin_dir / "gpuhop-gateway", "--help")
    assert gateway.returncode == 0, gateway.stderr
    assert "Usage: gpuhop-gateway" in gateway.stdout
    assert _importable(bin_dir, SERVER_SIDE) == ["fastapi", "sqlalchemy", "uvicorn", "psycopg"]
