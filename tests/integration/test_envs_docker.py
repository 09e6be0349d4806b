"""Environments against real Docker engines: build, thin pushes, fan-out, cut-off pushes, run.

Three private ``dockerd`` processes stand for the developer's machine
(``local``) and two regions (``sg-1``, ``my-1``). Base images come from
``docker import`` of a busybox rootfs the test builds; nothing is pulled.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from client.envs.build import LABEL_FINGERPRINT, build_env, env_ref, list_envs
from client.envs.engine import DockerEngine, connect
from client.envs.run import LABEL_JOB, run_in_container
from client.envs.spec import load_devcontainer, load_env
from client.envs.sync import push
from client.errors import (
    BuildFailed,
    DockerUnavailable,
    EnvNotFound,
    GpuRuntimeMissing,
    JobCancelled,
)
from tests.integration.dockerd import Dockerd, import_busybox, need_dockerd

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BASE = "gpuhop-test/base:1"
REPO_ROOT = Path(__file__).resolve().parents[2]
LINES = 20_000  # ~1 MB of source text in the top layer


@dataclass
class Engines:
    local: docker.DockerClient
    hosts: dict[str, docker.DockerClient]
    daemons: dict[str, Dockerd]
    images: Path

    def engine(self, name: str) -> DockerEngine:
        if name == "local":
            return DockerEngine(self.local, "local")
        return DockerEngine(self.hosts[name], name)


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    need_dockerd()
    names = ("local", "sg-1", "my-1")
    daemons = {n: Dockerd(n) for n in names}
    try:
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda d: d.start(), daemons.values()))
        clients = {n: d.client() for n, d in daemons.items()}
        import_busybox(clients["local"], BASE)
        yield Engines(
            clients["local"],
            {n: clients[n] for n in names[1:]},
            daemons,
            tmp_path_factory.mktemp("images"),
        )
        for client in clients.values():
            client.close()
    finally:
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda d: d.stop(), daemons.values()))


def _source_text(version: str) -> str:
    lines = [f"line {i:05d} of the application source, unchanged\n" for i in range(LINES)]
    lines[LINES // 2] = f"the one line that changes: {version}\n"
    return "".join(lines)


def write_env(images: Path, name: str, deps_mb: int = 20, seed: int = 1) -> Path:
    """images/<name>: busybox base, a big dependency layer, ~1 MB of source on top."""
    root = images / name
    (root / "src").mkdir(parents=True, exist_ok=True)
    deps = root / "deps.bin"
    if not deps.exists():
        deps.write_bytes(random.Random(seed).randbytes(deps_mb * 1024 * 1024))
    (root / "Dockerfile").write_text(
        f'FROM {BASE}\nCOPY deps.bin /opt/deps.bin\nCOPY src/ /app/\nCMD ["sh", "-c", '
        '"sed -n 10001p /app/main.txt"]\n'
    )
    (root / "env.toml").write_text('description = "test app"\ngpus = 0\ncommand = ["sh"]\n')
    (root / "requirements.lock").write_text("# no Python packages in this image\n")
    (root / ".dockerignore").write_text("scratch/\n")
    set_line(root, "v1")
    return root


def set_line(root: Path, version: str) -> None:
    (root / "src" / "main.txt").write_text(_source_text(version))


def build(engines: Engines, name: str) -> str:
    built = build_env(engines.local, load_env(engines.images, name))
    return built.image_id


def layer_tar_sizes(client: docker.DockerClient, ref: str) -> dict[str, int]:
    """diff ID -> size of its layer.tar in a full ``docker save``."""
    data = b"".join(client.api.get_image(ref))
    diff_ids = client.api.inspect_image(ref)["RootFS"]["Layers"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        sizes = {m.name: m.size for m in tar.getmembers()}
    return {d: sizes[p] for d, p in zip(diff_ids, manifest[0]["Layers"], strict=True)}


def host_output(client: docker.DockerClient, ref: str) -> str:
    out = client.containers.run(ref, remove=True)
    return bytes(out).decode().strip()


# ---------------------------------------------------------------- build


def test_build_streams_progress_reuses_unchanged_inputs_and_lists(engines: Engines) -> None:
    write_env(engines.images, "buildme", deps_mb=1)
    spec = load_env(engines.images, "buildme")
    lines: list[str] = []
    first = build_env(engines.local, spec, progress=lines.append)
    assert not first.reused and any(line.startswith("Step 1/") for line in lines)
    labels = engines.local.api.inspect_image(first.image_id)["Config"]["Labels"]
    assert labels[LABEL_FINGERPRINT] == first.fingerprint

    (engines.images / "buildme" / "scratch").mkdir(exist_ok=True)
    (engines.images / "buildme" / "scratch" / "notes.txt").write_text("ignored by .dockerignore")
    lines.clear()
    again = build_env(engines.local, load_env(engines.images, "buildme"), progress=lines.append)
    assert again.reused and again.image_id == first.image_id
    assert not any(line.startswith("Step") for line in lines)

    set_line(engines.images / "buildme", "v2")
    changed = build_env(engines.local, load_env(engines.images, "buildme"))
    assert not changed.reused and changed.fingerprint != first.fingerprint

    listed = {(e.name, e.fingerprint): e for e in list_envs(engines.local)}
    current = listed[("buildme", changed.fingerprint)]
    assert current.current and current.size > 1024 * 1024 and env_ref("buildme") in current.tags
    assert not listed[("buildme", first.fingerprint)].current


def test_devcontainer_definition_builds(engines: Engines, tmp_path: Path) -> None:
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / "Dockerfile").write_text(
        f'FROM {BASE}\nCOPY hello.txt /hello.txt\nCMD ["cat", "/hello.txt"]\n'
    )
    (tmp_path / "hello.txt").write_text("from a dev container\n")
    (tmp_path / ".devcontainer" / "devcontainer.json").write_text(
        '{\n  // the team\'s existing definition\n  "name": "Team Env",\n'
        '  "build": {"dockerfile": "../Dockerfile", "context": "..",},\n}\n'
    )
    spec = load_devcontainer(tmp_path)
    built = build_env(engines.local, spec)
    assert built.name == "team-env"
    assert host_output(engines.local, built.ref) == "from a dev container"


# ---------------------------------------------------------------- sync


def test_one_line_change_sends_only_the_top_layer(engines: Engines) -> None:
    root = write_env(engines.images, "app")
    build(engines, "app")
    local, sg = engines.engine("local"), engines.engine("sg-1")
    first = push(local, env_ref("app"), [sg])
    assert first.link_bytes > 20 * 1024 * 1024
    assert host_output(engines.hosts["sg-1"], env_ref("app")) == "the one line that changes: v1"

    set_line(root, "v2")
    new_id = build(engines, "app")
    top = engines.local.api.inspect_image(new_id)["RootFS"]["Layers"][-1]
    top_size = layer_tar_sizes(engines.local, new_id)[top]
    progress: list[int] = []
    report = push(local, env_ref("app"), [sg], progress=lambda p: progress.append(p.sent))
    (result,) = report.targets
    assert result.layers_sent == (top,)
    assert report.link_bytes <= 1.05 * top_size, (report.link_bytes, top_size)
    assert result.bytes_sent == report.link_bytes
    assert engines.hosts["sg-1"].api.inspect_image(env_ref("app"))["Id"] == new_id
    assert host_output(engines.hosts["sg-1"], env_ref("app")) == "the one line that changes: v2"
    assert progress and progress[-1] == report.link_bytes

    assert push(local, env_ref("app"), [sg]).targets[0].status == "current"


def test_a_new_layer_crosses_the_link_once_for_two_hosts(engines: Engines) -> None:
    root = write_env(engines.images, "fan", deps_mb=8, seed=2)
    build(engines, "fan")
    local = engines.engine("local")
    hosts = [engines.engine("sg-1"), engines.engine("my-1")]
    push(local, env_ref("fan"), hosts)

    set_line(root, "fanned out")
    new_id = build(engines, "fan")
    top = engines.local.api.inspect_image(new_id)["RootFS"]["Layers"][-1]
    layer = layer_tar_sizes(engines.local, new_id)[top]
    full_save = sum(len(chunk) for chunk in engines.local.api.get_image(env_ref("fan")))
    report = push(local, env_ref("fan"), hosts)
    # The local save is read once and the new layer crosses the client's link
    # once; each host receives it.
    assert report.source_bytes == full_save
    assert report.link_bytes <= 1.05 * layer, (report.link_bytes, layer)
    assert [t.layers_sent for t in report.targets] == [(top,), (top,)]
    assert all(layer <= t.bytes_sent <= 1.05 * layer for t in report.targets)
    for name in ("sg-1", "my-1"):
        assert engines.hosts[name].api.inspect_image(env_ref("fan"))["Id"] == new_id


_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from client.envs.engine import DockerEngine, connect
    from client.envs.sync import push

    local, host, ref, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    target = DockerEngine(connect(host), "host")
    real_load = target.load

    def cut(chunks):
        sent = 0
        for chunk in chunks:
            yield chunk
            sent += len(chunk)
            if sent >= limit:
                print(f"killed after {sent} bytes", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    target.load = lambda chunks: real_load(cut(chunks))
    push(DockerEngine(connect(local), "local"), ref, [target])
    """
)


def test_a_push_cut_off_halfway_keeps_the_old_image_and_a_retry_completes(
    engines: Engines,
) -> None:
    root = write_env(engines.images, "cut", deps_mb=12, seed=3)
    old_id = build(engines, "cut")
    local, my = engines.engine("local"), engines.engine("my-1")
    push(local, env_ref("cut"), [my])

    (root / "deps.bin").write_bytes(random.Random(4).randbytes(12 * 1024 * 1024))
    set_line(root, "new")
    new_id = build(engines, "cut")
    host_url = engines.daemons["my-1"].base_url
    child = subprocess.run(
        [sys.executable, "-c", _KILLER, engines.daemons["local"].base_url, host_url,
         env_ref("cut"), str(6 * 1024 * 1024)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert "killed after" in child.stdout

    host = engines.hosts["my-1"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the engine notices the cut connection
        assert host.api.inspect_image(env_ref("cut"))["Id"] == old_id
        if not [i for i in host.api.images(all=True, quiet=True) if i == new_id]:
            break
        time.sleep(0.2)
    assert host.api.inspect_image(env_ref("cut"))["Id"] == old_id
    assert new_id not in host.api.images(all=True, quiet=True)
    assert host_output(host, env_ref("cut")) == "the one line that changes: v1"

    report = push(local, env_ref("cut"), [my])
    assert report.targets[0].status == "loaded"
    assert host.api.inspect_image(env_ref("cut"))["Id"] == new_id
    assert host_output(host, env_ref("cut")) == "the one line that changes: new"


# ---------------------------------------------------------------- run


def test_run_propagates_exit_code_streams_and_mounts(engines: Engines, tmp_path: Path) -> None:
    host = engines.hosts["sg-1"]
    push(engines.engine("local"), BASE, [engines.engine("sg-1")])
    (tmp_path / "input.txt").write_text("from the work directory\n")
    out: list[bytes] = []
    err: list[bytes] = []
    result = run_in_container(
        host,
        BASE,
        ["sh", "-c", 'cat input.txt; echo "$GREETING" >&2; echo done > output.txt; exit 7'],
        workdir=str(tmp_path),
        env={"GREETING": "hello from env"},
        stdout=out.append,
        stderr=err.append,
    )
    assert result.exit_code == 7
    assert b"".join(out) == b"from the work directory\n"
    assert b"".join(err) == b"hello from env\n"
    assert (tmp_path / "output.txt").read_text() == "done\n"
    assert host.containers.list(all=True, filters={"id": result.container_id}) == []


def test_cancelling_a_running_job_removes_its_container(engines: Engines) -> None:
    host = engines.hosts["sg-1"]
    push(engines.engine("local"), BASE, [engines.engine("sg-1")])
    cancel = threading.Event()
    started = threading.Event()

    def out(data: bytes) -> None:
        if b"started" in data:
            started.set()

    def cancel_when_started() -> None:
        if started.wait(30):
            cancel.set()

    canceller = threading.Thread(target=cancel_when_started)
    canceller.start()
    t0 = time.monotonic()
    with pytest.raises(JobCancelled, match="removed"):
        run_in_container(
            host, BASE, ["sh", "-c", "echo started; sleep 60"], stdout=out, cancel=cancel,
            job="cancel-me",
        )  # fmt: skip
    canceller.join()
    assert time.monotonic() - t0 < 30
    assert host.containers.list(all=True, filters={"label": f"{LABEL_JOB}=cancel-me"}) == []


def test_gpus_on_an_engine_without_nvidia_runtime_is_one_clear_error(engines: Engines) -> None:
    host = engines.hosts["my-1"]
    push(engines.engine("local"), BASE, [engines.engine("my-1")])
    with pytest.raises(GpuRuntimeMissing, match="no NVIDIA container runtime") as info:
        run_in_container(host, BASE, ["true"], gpu_device_ids=["0", "1"], job="gpu-job")
    assert "\n" not in str(info.value) and "GPUs 0,1" in str(info.value)
    assert host.containers.list(all=True, filters={"label": f"{LABEL_JOB}=gpu-job"}) == []


# ---------------------------------------------------------------- bad inputs


def test_a_host_without_docker_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(DockerUnavailable, match="socket does not exist") as missing:
        connect(f"unix://{tmp_path}/docker.sock", timeout=5)
    dead = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(dead))  # bound, never listening: connections are refused
        with pytest.raises(DockerUnavailable, match="connection refused") as refused:
            connect(f"unix://{dead}", timeout=5)
    for info in (missing, refused):
        assert "\n" not in str(info.value)


def test_a_missing_image_directory_is_one_clear_line(engines: Engines) -> None:
    write_env(engines.images, "app")
    with pytest.raises(EnvNotFound, match=r"no environment 'nope'.*known: .*app") as info:
        load_env(engines.images, "nope")
    assert "\n" not in str(info.value)


def test_a_failing_dockerfile_names_the_step(engines: Engines) -> None:
    root = engines.images / "broken"
    root.mkdir(exist_ok=True)
    (root / "Dockerfile").write_text(f'FROM {BASE}\nRUN echo fine\nRUN exit 3\nCMD ["true"]\n')
    with pytest.raises(BuildFailed) as info:
        build_env(engines.local, load_env(engines.images, "broken"))
    message = str(info.value)
    assert "\n" not in message
    assert re.search(r"at Step 3/\d+ : RUN exit 3: .*returned a non-zero code: 3", message)
    assert os.linesep not in message
