"""``gpuhop run -- true`` next to OpenSSH ``ssh -J gateway host true``: same gateway and host.

Both go through one real ``gpuhop-gateway serve`` to one real OpenSSH host,
as the same user with a recorded-mode role, so both are recorded sessions:

* **gpuhop run** — a fresh ``gpuhop`` process (logged in beforehand, as a
  developer or CI runner would be): Python start-up and imports, one SSH
  connection to the gateway, the work directory sent as tar on one channel
  while the job channel opens, the command run under its wrapper, exit code.
* **ssh -J** — a fresh OpenSSH ``ssh -J gw root@host true`` (jump through the
  gateway, the host certificate from the gateway's host CA).

Runs alternate, medians are reported with their ratio (target <= 1.5x). More
lines explain the gap: a bare ``python -c pass`` and the imports ``gpuhop
run`` needs, each timed as a fresh process the same way, and the protocol
work alone: ``Runner.run()`` repeated inside one warm Python process.

    python bench/run_overhead.py [--runs 25] [--files 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from _harness import REPO, Figure, Target, emit, interleaved, machine_note
from _harness import median as med

from tests.integration.conftest import ROLES
from tests.integration.gwstack import GatewayStack

TARGET = Target("ratio", "<=", 1.5)

IN_PROCESS = """
import asyncio, json, sys, time
from pathlib import Path
from client import identity, workdir
from client.run import Runner, RunRequest
from client.settings import load_settings

class Quiet:
    def stdout(self, data): pass
    def stderr(self, data): pass

settings = load_settings()
profile = identity.ready(settings)
paths = identity.paths_of(settings)
selection = workdir.select_files(Path("."))

async def main():
    times = []
    for _ in range(int(sys.argv[1]) + 1):
        start = time.perf_counter()
        request = RunRequest("sg-1", ("true",), selection)
        summary = await Runner(request, profile, paths, settings, Quiet()).run()
        assert summary.exit_code == 0, summary
        times.append(time.perf_counter() - start)
    print(json.dumps(times[1:]))

asyncio.run(main())
"""


@dataclass
class RunEnv:
    stack: GatewayStack
    client_env: dict[str, str]
    empty: Path
    repo: Path

    def gpuhop(self, *args: str) -> list[str]:
        script = Path(sys.executable).with_name("gpuhop")
        head = [str(script)] if script.exists() else [sys.executable, "-m", "client.cli"]
        return [*head, *args]


@contextmanager
def run_env(files: int) -> Iterator[RunEnv]:
    root = Path(tempfile.mkdtemp(prefix="gpuhop-bench-run-"))
    stack = GatewayStack(root)
    try:
        stack.ca()
        stack.add_host("sg-1")
        stack.add_user("rita")
        stack.write_config(ROLES, {"rita": ["rec"]})
        stack.start_gateway()
        client = root / "client"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUHOP_")}
        env.update(
            HOME=str(client / "home"),
            XDG_DATA_HOME=str(client / "data"),
            XDG_CONFIG_HOME=str(client / "config"),
            PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring",
        )
        for key in ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
            Path(env[key]).mkdir(parents=True, exist_ok=True)
        token = subprocess.run(
            [
                *(sys.executable, "-m", "gateway.cli", "token", "create"),
                *("--config", str(stack.config), "--user", "rita"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
        url = f"http://127.0.0.1:{stack.api_port}"
        renv = RunEnv(stack, env, client / "empty", client / "repo")
        login = subprocess.run(
            renv.gpuhop("login", url, "--token-stdin", "-q"),
            input=token + "\n",
            capture_output=True,
            text=True,
            env=env,
        )
        if login.returncode != 0:
            raise RuntimeError(f"login failed: {login.stderr}")
        renv.empty.mkdir()
        _make_repo(renv.repo, files)
        yield renv
    finally:
        stack.close()
        shutil.rmtree(root, ignore_errors=True)


def _make_repo(repo: Path, files: int) -> None:
    (repo / "src").mkdir(parents=True)
    for i in range(files):
        (repo / "src" / f"mod{i}.py").write_text(f"X = {i}\n" * 40)
    git = ["git", "-C", str(repo), "-c", "user.email=b@b", "-c", "user.name=b"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "bench"], check=True)


def timed(cmd: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, env=env, cwd=cwd, timeout=60)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[:3]}: rc={result.returncode} {result.stderr[-300:]!r}")
    return elapsed


def measure(env: RunEnv, runs: int, files: int) -> list[Figure]:
    rita = env.stack.users["rita"]
    ssh = env.stack.jump_command(rita, "sg-1", "true")
    run_empty = env.gpuhop("run", "--host", "sg-1", "-q", "--workdir", str(env.empty), "--", "true")
    run_repo = env.gpuhop("run", "--host", "sg-1", "-q", "--workdir", str(env.repo), "--", "true")
    imports = [sys.executable, "-c", "import client.cli, client.run, client.identity"]
    secs = interleaved(
        runs,
        {
            "ssh": partial(timed, ssh),
            "run": partial(timed, run_empty, env.client_env, env.empty),
            "repo": partial(timed, run_repo, env.client_env, env.repo),
            "python": partial(timed, [sys.executable, "-c", "pass"]),
            "imports": partial(timed, imports, None, REPO),
        },
    )
    ms = {k: med(v) * 1000 for k, v in secs.items()}
    warm = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, str(runs)],
        capture_output=True,
        text=True,
        env=env.client_env,
        cwd=env.empty,
        check=True,
        timeout=300,
    )
    ms["warm"] = med(json.loads(warm.stdout)) * 1000
    note = f"median of {runs}, interleaved"
    return [
        Figure("gpuhop run -- true (empty workdir)", "ms", ms["run"], ms["ssh"], TARGET, note),
        Figure(
            f"gpuhop run -- true ({files}-file git repo)", "ms", ms["repo"], ms["ssh"], TARGET, note
        ),
        Figure("  of which: python -c pass", "ms", ms["python"], None, None, note),
        Figure(
            "  of which: python + gpuhop run's imports",
            "ms",
            ms["imports"],
            None,
            None,
            f"{note}; the rest is protocol work",
        ),
        Figure(
            "gpuhop run protocol only (warm process)",
            "ms",
            ms["warm"],
            ms["ssh"],
            None,
            f"median of {runs} Runner.run() in one process, empty workdir",
        ),
    ]


def main(argv: list[str] | None = None) -> list[Figure]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=25, help="runs of each, interleaved")
    ap.add_argument("--files", type=int, default=20, help="files in the git-repo workdir")
    args = ap.parse_args(argv)
    with run_env(args.files) as env:
        print(
            f"# gpuhop run vs ssh -J (recorded, one gateway, one OpenSSH host); "
            f"'openssh' column = ssh -F cfg -J gw root@sg-1 true; {os.cpu_count()} CPUs; "
            f"{machine_note()}",
            flush=True,
        )
        figures = measure(env, args.runs, args.files)
        emit(figures)
    return figures


if __name__ == "__main__":
    main()
