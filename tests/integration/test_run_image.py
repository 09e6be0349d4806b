"""``gpuhop run --image``: the job in a container on the host, through a real gateway.

A real gateway subprocess in front of an OpenSSH host (``sg-1``) whose sessions'
``docker`` CLI talks to a private ``dockerd`` (``DOCKER_HOST`` set by its sshd);
the developer's engine is a second ``dockerd`` holding a base image made by
``docker import`` of a busybox rootfs. Neither engine has an NVIDIA runtime, so
``--gpus`` is checked for its one clear refusal; the DeviceRequest itself is what
``docker run --gpus`` sends, covered by ``client.envs.run``'s tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from client.envs.run import gpu_device_requests
from client.run import RunRequest, image_command
from client.workdir import Selection
from gpuhop_sim.sshd import SshdHost
from tests.integration.conftest import ROLES, need_openssh
from tests.integration.dockerd import Dockerd, import_busybox, need_dockerd
from tests.integration.gwstack import GatewayStack, read_until

pytestmark = [pytest.mark.docker, pytest.mark.openssh, pytest.mark.slow]

BASE = "gpuhop-test/base:1"
HOST = "sg-1"


@dataclass
class Env:
    stack: GatewayStack
    local: docker.DockerClient
    host: docker.DockerClient
    root: Path
    client_env: dict[str, str]
    host_url: str

    def gpuhop(
        self, *args: str, timeout: float = 120.0, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "client.cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.client_env,
            timeout=timeout,
            cwd=self.root,
        )

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "client.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=self.client_env,
            cwd=self.root,
        )

    def containers(self, name: str) -> list[str]:
        found = self.host.api.containers(all=True, filters={"name": name})
        return [str(c["Id"]) for c in found]


def _client_env(root: Path, docker_host: str) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TERM")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        HOME=str(root / "home"),
        PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring",
        PYTHONDONTWRITEBYTECODE="1",
        DOCKER_HOST=docker_host,
    )
    for kind in ("data", "config", "state", "cache"):
        (root / "xdg" / kind).mkdir(parents=True, exist_ok=True)
        env[f"XDG_{kind.upper()}_HOME"] = str(root / "xdg" / kind)
    (root / "home").mkdir(parents=True, exist_ok=True)
    return env


def _login(stack: GatewayStack, env: Env, user: str) -> None:
    created = subprocess.run(
        [
            *(sys.executable, "-m", "gateway.cli", "token", "create"),
            *("--config", str(stack.config), "--user", user, "--scope", "user"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    secret = created.stdout.strip().splitlines()[-1]
    url = f"http://127.0.0.1:{stack.api_port}"
    result = env.gpuhop("login", url, "--token-stdin", stdin=secret + "\n")
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    need_openssh()
    need_dockerd()
    daemons = {n: Dockerd(n) for n in ("local", HOST)}
    root = tmp_path_factory.mktemp("runimage")
    stack = GatewayStack(root)
    clients: list[docker.DockerClient] = []
    try:
        for d in daemons.values():
            d.start()
        stack.ca()
        host = SshdHost(
            name=HOST,
            directory=stack.root / "hosts" / HOST,
            gpus=4,
            gpu_model="NVIDIA A100-SXM4-80GB",
            user_ca_pub=stack.host_ca_lines(),
            extra_env={"DOCKER_HOST": daemons[HOST].base_url},
        )
        host.start()
        stack.hosts[HOST] = host
        stack.host_addresses[HOST] = ("127.0.0.1", host.port)
        stack.add_user("rita")
        stack.write_config(ROLES, {"rita": ["rec"]})
        stack.start_gateway()
        local, remote = daemons["local"].client(), daemons[HOST].client()
        clients += [local, remote]
        import_busybox(local, BASE)
        client_root = tmp_path_factory.mktemp("rita")
        client_env = _client_env(client_root, daemons["local"].base_url)
        e = Env(stack, local, remote, client_root, client_env, daemons[HOST].base_url)
        _login(stack, e, "rita")
        yield e
    finally:
        for c in clients:
            c.close()
        stack.close()
        for d in daemons.values():
            d.stop()


def _workdir(env: Env, name: str) -> Path:
    work = env.root / name
    work.mkdir(exist_ok=True)
    (work / "data.txt").write_text("from the work directory\n")
    return work


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    return read_until(proc.stdout.fileno(), b"\n", timeout)


def test_the_image_is_pushed_first_and_the_exit_code_is_exact(env: Env) -> None:
    work = _workdir(env, "exit")
    result = env.gpuhop(
        "run", "--host", HOST, "--image", BASE, "--workdir", str(work), "--", "sh", "-c", "exit 7"
    )
    assert result.returncode == 7, result.stderr
    assert f"pushing {BASE} to {HOST}" in result.stderr
    local_id = env.local.api.inspect_image(BASE)["Id"]
    assert env.host.api.inspect_image(BASE)["Id"] == local_id
    assert env.containers("gpuhop-") == []  # removed once it ended

    again = env.gpuhop("run", "--host", HOST, "--image", BASE, "--workdir", str(work), "--", "true")
    assert again.returncode == 0, again.stderr
    assert "pushing" not in again.stderr  # the host holds it now


def test_the_work_directory_is_mounted_and_env_passed(env: Env) -> None:
    work = _workdir(env, "mount")
    script = 'cat data.txt; echo "$GREETING|$GPUHOP_GPUS"; pwd; echo oops >&2'
    result = env.gpuhop(
        "run", "-q", "--host", HOST, "--image", BASE, "--workdir", str(work),
        "-e", "GREETING=hello there", "--", "sh", "-c", script,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from the work directory\nhello there|0\n/work\n"
    assert result.stderr == "oops\n"


@pytest.mark.parametrize(
    ("how", "code"), [("sigint", 130), ("sigterm", 143), ("timeout", 124), ("client killed", -9)]
)
def test_a_cancelled_job_has_its_container_removed(env: Env, how: str, code: int) -> None:
    work = _workdir(env, "cancel")
    limit = ("--timeout", "3s") if how == "timeout" else ()
    proc = env.popen(
        "run", "-q", "--host", HOST, "--image", BASE, "--workdir", str(work), *limit,
        "--", "sh", "-c", "echo up; sleep 60",
    )  # fmt: skip
    try:
        first = _read_line(proc, 60)
        assert first == b"up\n", first
        assert len(env.containers("gpuhop-")) == 1, _state(env)
        if how != "timeout":
            sig = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}.get(how, signal.SIGKILL)
            proc.send_signal(sig)
        stopped = time.monotonic()  # for --timeout: from when gpuhop gave up
        proc.wait(15)
        if how == "timeout":
            stopped = time.monotonic()
        assert proc.returncode == code
        left = env.containers("gpuhop-")
        while left and time.monotonic() - stopped < 5.0:
            time.sleep(0.05)
            left = env.containers("gpuhop-")
        assert left == [], f"the container outlived the cancelled job: {_state(env)}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        for cid in env.containers("gpuhop-"):
            env.host.api.remove_container(cid, force=True)


def _state(env: Env) -> list[tuple[str, str]]:
    return [(str(c["Names"]), str(c["Status"])) for c in env.host.api.containers(all=True)]


def test_gpus_without_an_nvidia_runtime_is_one_clear_line(env: Env) -> None:
    work = _workdir(env, "gpus")
    result = env.gpuhop(
        "run", "-q", "--host", HOST, "--image", BASE, "--gpus", "1", "--workdir", str(work),
        "--", "true",
    )  # fmt: skip
    assert result.returncode == 125, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "no NVIDIA container runtime" in result.stderr
    assert env.containers("gpuhop-") == []


_RECORDING_DOCKER = """#!/bin/sh
[ "$1" = rm ] && "$REAL_DOCKER" inspect --format '{{json .HostConfig.DeviceRequests}}' "$3" >>"$LOG"
exec "$REAL_DOCKER" "$@"
"""


def test_the_leased_devices_become_the_same_device_request_as_envs_run(
    env: Env, tmp_path: Path
) -> None:
    """The wrapper's ``--gpus`` asks for exactly the leased device IDs (recorded before removal)."""
    real = shutil.which("docker")
    assert real is not None
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "docker").write_text(_RECORDING_DOCKER)
    (shim / "docker").chmod(0o755)
    log = tmp_path / "requests.jsonl"
    variables = {
        "PATH": f"{shim}:{os.environ['PATH']}",
        "REAL_DOCKER": real,
        "LOG": str(log),
        "DOCKER_HOST": env.host_url,
        "CUDA_VISIBLE_DEVICES": "1,3",
    }
    request = RunRequest(HOST, ("true",), Selection(tmp_path, (), "walk"), gpus=2, image=BASE)
    result = subprocess.run(
        image_command("r1", request), capture_output=True, text=True, env=variables, cwd=tmp_path
    )
    assert result.returncode == 125, result.stderr
    assert "no NVIDIA container runtime" in result.stderr
    recorded = json.loads(log.read_text().splitlines()[0])
    assert recorded == [dict(r) for r in gpu_device_requests(["1", "3"])]
