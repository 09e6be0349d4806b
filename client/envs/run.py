"""Run one job in a container: leased GPUs attached, work directory mounted, output streamed.

    result = run_in_container(client, "gpuhop-env/base:latest", ["python", "train.py"],
                              workdir="/srv/jobs/42", env={"SEED": "1"}, gpu_device_ids=["0"])
    sys.exit(result.exit_code)

Leased GPUs become one ``DeviceRequest`` naming their device IDs with the
``gpu`` capability (what ``docker run --gpus '"device=0,1"'`` sends). An engine
without the NVIDIA runtime refuses that when the container starts; that refusal
becomes one ``GpuRuntimeMissing`` line. stdout and stderr arrive separately
(the attach stream is demultiplexed), the container's exit code is returned,
and the container is removed whatever happens: normal exit, error, or
``cancel`` being set (then ``JobCancelled`` is raised).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import docker.types

from client.envs.dockercompat import close_stream
from client.envs.engine import engine_url, translated
from client.errors import EnvError, EnvNotFound, GpuRuntimeMissing, JobCancelled

CONTAINER_WORKDIR = "/work"
LABEL_JOB = "io.gpuhop.job"
OutputFn = Callable[[bytes], None]
_NO_GPU_RUNTIME = ("could not select device driver", "unknown or invalid runtime name: nvidia")


@dataclass(frozen=True)
class RunResult:
    """How a job ended."""

    exit_code: int
    container_id: str


def gpu_device_requests(gpu_device_ids: Sequence[str]) -> list[docker.types.DeviceRequest]:
    """The DeviceRequest list for leased GPUs; empty when none are leased.

    >>> [r["DeviceIDs"] for r in gpu_device_requests(["0", "1"])]
    [['0', '1']]
    """
    if not gpu_device_ids:
        return []
    return [docker.types.DeviceRequest(device_ids=list(gpu_device_ids), capabilities=[["gpu"]])]


def container_options(
    image: str,
    command: Sequence[str],
    workdir: str | None,
    env: Mapping[str, str],
    gpu_device_ids: Sequence[str],
    job: str = "",
) -> dict[str, Any]:
    """Keyword arguments for ``containers.create``: separated from running for testing."""
    options: dict[str, Any] = {
        "image": image,
        "command": list(command),
        "environment": dict(env),
        "detach": True,
        "tty": False,
        "stdin_open": False,
        "labels": {LABEL_JOB: job or "1"},
        "device_requests": gpu_device_requests(gpu_device_ids),
    }
    if workdir is not None:
        options["volumes"] = {workdir: {"bind": CONTAINER_WORKDIR, "mode": "rw"}}
        options["working_dir"] = CONTAINER_WORKDIR
    return options


def _write(stream: Any) -> OutputFn:
    def write(data: bytes) -> None:
        stream.buffer.write(data)
        stream.buffer.flush()

    return write


def run_in_container(
    client: docker.DockerClient,
    image: str,
    command: Sequence[str],
    workdir: str | None = None,
    env: Mapping[str, str] | None = None,
    gpu_device_ids: Sequence[str] = (),
    *,
    stdout: OutputFn | None = None,
    stderr: OutputFn | None = None,
    cancel: threading.Event | None = None,
    job: str = "",
) -> RunResult:
    """Run ``command`` in ``image`` to completion; see the module docstring."""
    out = stdout or _write(sys.stdout)
    err = stderr or _write(sys.stderr)
    url = engine_url(client)
    options = container_options(image, command, workdir, env or {}, gpu_device_ids, job)
    with translated(f"run in {image}", url):
        try:
            container = client.containers.create(**options)
        except docker.errors.ImageNotFound:
            raise EnvNotFound(f"image {image} is not on this engine: push it first") from None
    try:
        with translated(f"run in {image}", url):
            stream = client.api.attach(
                container.id, stdout=True, stderr=True, stream=True, logs=True, demux=True
            )
            try:
                container.start()
            except docker.errors.APIError as e:
                close_stream(stream)
                text = str(e.explanation or e)
                if gpu_device_ids and any(s in text for s in _NO_GPU_RUNTIME):
                    raise GpuRuntimeMissing(
                        f"cannot attach GPUs {','.join(gpu_device_ids)}: the engine at {url} has "
                        "no NVIDIA container runtime (install nvidia-container-toolkit there)"
                    ) from None
                raise
        return _follow(client, container, stream, out, err, cancel, url)
    finally:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if "already in progress" not in str(e):
                raise EnvError(f"could not remove container {container.short_id}: {e}") from None


def _follow(
    client: docker.DockerClient,
    container: Any,
    stream: Any,
    out: OutputFn,
    err: OutputFn,
    cancel: threading.Event | None,
    url: str,
) -> RunResult:
    """Pump output in a thread while waiting for the end or for ``cancel``."""
    failure: list[BaseException] = []
    ended = threading.Event()

    def pump() -> None:
        try:
            for o, e in stream:
                if o:
                    out(o)
                if e:
                    err(e)
        except Exception as exc:  # the stream breaks when a cancelled container goes
            failure.append(exc)
        finally:
            ended.set()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        while not ended.wait(0.05):
            if cancel is not None and cancel.is_set():
                container.remove(force=True)
                close_stream(stream)
                thread.join(timeout=10)
                raise JobCancelled(f"job cancelled; container {container.short_id} removed")
        thread.join()
    finally:
        close_stream(stream)
    if failure and cancel is not None and cancel.is_set():
        raise JobCancelled(f"job cancelled; container {container.short_id} removed")
    with translated("wait for job", url):
        status = container.wait()
    code = status.get("StatusCode")
    return RunResult(int(code if code is not None else 1), str(container.id))
