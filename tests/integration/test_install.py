"""A fresh virtualenv: `pip install .` is a working client only; `.[gateway]` adds the gateway,
and the simulated hosts' package (sim/) installs beside it with the demo.

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


def _pip_install(bin_dir: Path, *specs: str) -> None:
    done = _run(bin_dir / "python", "-m", "pip", "install", "-q", *specs, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def _importable(bin_dir: Path, modules: tuple[str, ...]) -> list[str]:
    probe = (
        "import importlib.util, sys\n"
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    )
    return _run(bin_dir / "python", "-c", probe, *modules).stdout.split()


_BUILT = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """gpuhop's distribution sources, outside the checkout."""
    dst = tmp_path / "src"
    dst.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)
    for package in ("gateway", "client"):
        shutil.copytree(ROOT / package, dst / package, ignore=_BUILT)
    shutil.copytree(ROOT / "sim", dst / "sim", ignore=_BUILT)
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
    demo = _run(bin_dir / "gpuhop", "demo", "--detach", "--state-dir", tmp_path / "demo")
    assert demo.returncode == 1
    assert demo.stderr.strip().splitlines()[-1].endswith("run ./scripts/demo in a gpuhop checkout")

    _pip_install(bin_dir, f"{source}[gateway]")
    gateway = _run(bin_dir / "gpuhop-gateway", "--help")
    assert gateway.returncode == 0, gateway.stderr
    assert "Usage: gpuhop-gateway" in gateway.stdout
    assert _importable(bin_dir, SERVER_SIDE) == ["fastapi", "sqlalchemy", "uvicorn", "psycopg"]

    # --no-deps: its dependencies are installed above; gpuhop must not come from the index.
    _pip_install(bin_dir, "--no-deps", str(source / "sim"))
    checked = _run(bin_dir / "python", "-m", "pip", "check")
    assert checked.returncode == 0, checked.stdout
    demo = _run(bin_dir / "gpuhop-demo", "--help")
    assert demo.returncode == 0, demo.stderr
    assert "simulated regions" in demo.stdout
