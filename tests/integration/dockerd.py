"""A private Docker engine per simulated host, and base images made without a registry.

Each ``Dockerd`` is a real ``dockerd`` with its own data-root, exec-root, pid
file and unix socket in a fresh directory under /tmp (socket paths must stay
under 108 bytes), started with ``--iptables=false --bridge=none`` so it touches
neither the machine's firewall nor its network: it listens on nothing but that
socket. Two of them side by side are two regions. ``stop()`` ends the engine by
its own pid and unmounts whatever it left mounted below its directory.

    with Dockerd("sg-1") as engine:
        client = engine.client()
        import_busybox(client, "gpuhop-test/base:1")

Needs root, ``dockerd`` (Debian's ``docker.io``) and ``/bin/busybox``
(``busybox-static``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import docker

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
BUSYBOX = "/bin/busybox"
_APPLETS = ("sh", "ls", "cat", "echo", "sleep", "true", "false", "env", "pwd", "grep", "sed")


def need_dockerd() -> None:
    """Skip unless dockerd, busybox and root are here; under CI=true fail instead."""
    from tests.conftest import missing_peer, require  # lazily: the bench imports this module too

    require("dockerd")
    require(BUSYBOX)
    if os.geteuid() != 0:
        missing_peer("Docker engine tests need root (dockerd does)")


def dockerd_path() -> str | None:
    """The engine binary, if installed (``/usr/local/bin/docker`` is only a client)."""
    for candidate in (shutil.which("dockerd"), "/usr/sbin/dockerd", "/usr/bin/dockerd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class DockerdError(RuntimeError):
    """The engine did not start; the message carries the tail of its log."""


class Dockerd:
    """One private Docker engine; see the module docstring."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.directory = Path(tempfile.mkdtemp(prefix=f"gpuhop-dk-{name}-"))
        self.socket = self.directory / "docker.sock"
        self.pidfile = self.directory / "docker.pid"
        self.log_path = self.directory / "dockerd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        # containerd namespaces allow only [A-Za-z0-9] runs joined by single . _ or -,
        # which mkdtemp's random suffix does not promise.
        self.namespace = "gpuhopdk" + hashlib.sha256(str(self.directory).encode()).hexdigest()[:12]

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> Dockerd:
        """Start the engine and return once it answers ``/version`` (raises ``DockerdError``)."""
        binary = dockerd_path()
        if binary is None:
            raise DockerdError("dockerd is not installed (Debian package docker.io)")
        for sub in ("root", "exec"):
            (self.directory / sub).mkdir(exist_ok=True)
        args = [
            binary,
            "--data-root", str(self.directory / "root"),
            "--exec-root", str(self.directory / "exec"),
            "--host", self.base_url,
            "--pidfile", str(self.pidfile),
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
            # Should a system containerd be running, dockerd attaches to it instead
            # of starting its own: keep each engine's containers apart there.
            "--containerd-namespace", self.namespace,
            "--containerd-plugins-namespace", self.namespace + "-plugins",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self._proc.poll() is None:
            if self.socket.exists() and self._answers():
                return self
            time.sleep(0.1)
        tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        self.stop()
        raise DockerdError(f"dockerd for {self.name} did not start:\n{tail}")

    def _answers(self) -> bool:
        try:
            client = docker.DockerClient(base_url=self.base_url, timeout=5)
        except docker.errors.DockerException:
            return False
        with contextlib.closing(client):
            return bool(client.ping())

    def client(self, timeout: int = 120) -> docker.DockerClient:
        """A new docker-py client for this engine (the caller closes it)."""
        return docker.DockerClient(base_url=self.base_url, timeout=timeout)

    def stop(self) -> None:
        """SIGTERM the engine by its pid (it stops its containers and containerd), then clean."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        self._unmount_below()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _unmount_below(self) -> None:
        """Lazily unmount anything left mounted in our directory, deepest first."""
        prefix = str(self.directory) + "/"
        try:
            lines = Path("/proc/self/mounts").read_text().splitlines()
        except OSError:
            return
        points = [f.split()[1] for f in lines if len(f.split()) > 1]
        for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def __enter__(self) -> Dockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def busybox_rootfs_tar(extra: dict[str, bytes] | None = None) -> bytes:
    """A tiny root filesystem: static busybox with a few applets, plus ``extra`` files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "etc", "work"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        data = Path(BUSYBOX).read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in _APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for name, content in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def import_busybox(client: docker.DockerClient, ref: str) -> str:
    """``docker import`` the busybox rootfs as ``ref``; returns the image ID."""
    repo, _, tag = ref.rpartition(":")
    client.api.import_image_from_data(busybox_rootfs_tar(), repository=repo, tag=tag)
    image_id: str = client.images.get(ref).id
    return image_id
