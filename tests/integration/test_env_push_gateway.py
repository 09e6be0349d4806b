"""``gpuhop env push`` through the gateway: one upload, fanned out to every host there.

A real gateway subprocess in front of three OpenSSH hosts. ``sg-1`` and
``my-1`` each have a private ``dockerd`` that their sessions' ``docker`` CLI
talks to (``DOCKER_HOST`` set by the host's sshd); ``ae-1`` has no engine and
user ``dev`` may not use it. The developer's engine is a third ``dockerd``.
Base images come from ``docker import`` of a busybox rootfs; nothing is pulled.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import docker
import pytest

from client.envs.build import build_env, env_ref, list_envs
from client.envs.engine import DockerEngine
from client.envs.remote import env_status, push_via_gateway
from client.envs.spec import load_env
from client.envs.sync import LINK, Progress, PushReport
from client.errors import SyncFailed
from gpuhop_sim.sshd import SshdHost
from tests.integration.conftest import need_openssh
from tests.integration.dockerd import Dockerd, import_busybox, need_dockerd
from tests.integration.gwstack import GatewayStack

pytestmark = [pytest.mark.docker, pytest.mark.openssh, pytest.mark.slow]

BASE = "gpuhop-test/base:1"
REPO_ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("sg-1", "my-1")
LINES = 20_000  # ~1 MB of source text in a top layer
ROLES = """
[[roles]]
name = "pusher"
hosts = ["region:sg", "region:my"]
accounts = ["root"]
modes = ["recorded"]

[[roles]]
name = "everywhere"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]
"""

Connect = Callable[[], Awaitable[asyncssh.SSHClientConnection]]


def gateway_connector(port: int, user: str, key: str, cert: str, known_hosts: str) -> Connect:
    """What the CLI's ``sshconn.connect`` does, from explicit paths."""

    async def connect() -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(
            "127.0.0.1",
            port,
            username=user,
            client_keys=[(asyncssh.read_private_key(key), asyncssh.read_certificate(cert))],
            known_hosts=known_hosts,
            agent_path=None,
            config=None,
        )

    return connect


@dataclass
class Env:
    stack: GatewayStack
    local: docker.DockerClient
    hosts: dict[str, docker.DockerClient]
    daemons: dict[str, Dockerd]
    images: Path

    def connect(self, user: str = "dev") -> Connect:
        u = self.stack.users[user]
        assert u.cert is not None
        return gateway_connector(
            self.stack.port, user, str(u.key), str(u.cert), str(self.stack.known_hosts)
        )

    def push(
        self, ref: str, hosts: Sequence[str] = HOSTS, user: str = "dev", **kw: Any
    ) -> PushReport:
        engine = DockerEngine(self.local, "local")
        return asyncio.run(
            push_via_gateway(engine, ref, hosts, connect_gateway=self.connect(user), **kw)
        )

    def host_id(self, host: str, ref: str) -> str:
        return str(self.hosts[host].api.inspect_image(ref)["Id"])


def _add_host(stack: GatewayStack, name: str, env: dict[str, str]) -> None:
    """``GatewayStack.add_host`` with session variables (the host's DOCKER_HOST)."""
    host = SshdHost(
        name=name,
        directory=stack.root / "hosts" / name,
        gpus=4,
        gpu_model="NVIDIA A100-SXM4-80GB",
        user_ca_pub=stack.host_ca_lines(),
        extra_env=env,
    )
    host.start()
    stack.hosts[name] = host
    stack.host_addresses[name] = ("127.0.0.1", host.port)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    need_openssh()
    need_dockerd()
    names = ("local", *HOSTS)
    daemons = {n: Dockerd(n) for n in names}
    root = tmp_path_factory.mktemp("envpush")
    stack = GatewayStack(root)
    try:
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda d: d.start(), daemons.values()))
        stack.ca()
        for name in HOSTS:
            _add_host(stack, name, {"DOCKER_HOST": daemons[name].base_url})
        # No engine behind this socket (and never the machine's own /var/run/docker.sock).
        _add_host(stack, "ae-1", {"DOCKER_HOST": f"unix://{root}/no-docker.sock"})
        stack.add_user("dev")
        stack.add_user("ops")
        stack.write_config(ROLES, {"dev": ["pusher"], "ops": ["everywhere"]})
        stack.start_gateway()
        clients = {n: d.client() for n, d in daemons.items()}
        import_busybox(clients["local"], BASE)
        yield Env(
            stack,
            clients["local"],
            {n: clients[n] for n in HOSTS},
            daemons,
            tmp_path_factory.mktemp("images"),
        )
        for client in clients.values():
            client.close()
    finally:
        stack.close()
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda d: d.stop(), daemons.values()))


def write_env(images: Path, name: str, deps_mb: int, seed: int, source: bool) -> Path:
    """busybox base + ``deps_mb`` of random bytes (+ ~1 MB of source text on top)."""
    root = images / name
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "deps.bin").write_bytes(random.Random(seed).randbytes(deps_mb * 1024 * 1024))
    copy_src = "COPY src/ /app/\n" if source else ""
    (root / "Dockerfile").write_text(
        f"FROM {BASE}\nCOPY deps.bin /opt/deps.bin\n{copy_src}"
        'CMD ["sh", "-c", "sed -n 10001p /app/main.txt 2>/dev/null || echo no-source"]\n'
    )
    (root / "env.toml").write_text('description = "test app"\ngpus = 0\ncommand = ["sh"]\n')
    (root / "requirements.lock").write_text("# no Python packages in this image\n")
    (root / ".dockerignore").write_text("scratch/\n")
    set_line(root, "v1")
    return root


def set_line(root: Path, version: str) -> None:
    lines = [f"line {i:05d} of the application source, unchanged\n" for i in range(LINES)]
    lines[LINES // 2] = f"the one line that changes: {version}\n"
    (root / "src" / "main.txt").write_text("".join(lines))


def build(env: Env, name: str) -> str:
    return build_env(env.local, load_env(env.images, name)).image_id


def layer_tar_size(client: docker.DockerClient, ref: str, index: int) -> int:
    """Size of layer ``index``'s ``layer.tar`` in a full ``docker save``."""
    data = b"".join(client.api.get_image(ref))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        sizes = {m.name: m.size for m in tar.getmembers()}
    return sizes[manifest[0]["Layers"][index]]


def full_save_size(client: docker.DockerClient, ref: str) -> int:
    return sum(len(chunk) for chunk in client.api.get_image(ref))


def run_on(env: Env, host: str, ref: str) -> str:
    return bytes(env.hosts[host].containers.run(ref, remove=True)).decode().strip()


def events(env: Env, kind: str, **match: object) -> list[dict[str, Any]]:
    return [e for e in env.stack.audit_events(kind) if all(e.get(k) == v for k, v in match.items())]


def wait_events(env: Env, kind: str, count: int, **match: object) -> list[dict[str, Any]]:
    return env.stack.wait_audit_events(
        kind, lambda e: all(e.get(k) == v for k, v in match.items()), count, timeout=15
    )


# ---------------------------------------------------------------- fan-out


def test_a_new_layer_crosses_the_link_once_for_two_hosts(env: Env) -> None:
    first = env.push(BASE)
    assert [t.status for t in first.targets] == ["loaded", "loaded"]
    # The whole archive, once, for two hosts.
    assert first.link_bytes == full_save_size(env.local, BASE)

    write_env(env.images, "fan", deps_mb=8, seed=2, source=False)
    image_id = build(env, "fan")
    ref = env_ref("fan")
    assert len(env.local.api.inspect_image(ref)["RootFS"]["Layers"]) == 2
    layer = layer_tar_size(env.local, ref, 1)
    seen: list[Progress] = []
    report = env.push(ref, progress=seen.append)

    assert layer <= report.link_bytes <= 1.05 * layer, (report.link_bytes, layer)
    assert report.source_bytes == full_save_size(env.local, ref)
    for target in report.targets:
        assert target.status == "loaded" and target.image_id == image_id
        assert target.bytes_sent == report.link_bytes  # the gateway forwarded it to each
    for host in HOSTS:
        assert env.host_id(host, ref) == image_id
        assert run_on(env, host, ref) == "no-source"
    assert seen and seen[-1].done and seen[-1].target == LINK
    assert seen[-1].sent == report.link_bytes

    pushes = events(env, "env.push", image_id=image_id)
    assert {e["host"] for e in pushes} == set(HOSTS)
    for e in pushes:
        assert (e["user"], e["ref"], e["result"], e["account"]) == ("dev", ref, "loaded", "root")
        assert e["bytes"] == e["bytes_to_host"] == report.link_bytes
    assert events(env, "env.push.start", image_id=image_id)

    again = env.push(ref)
    assert [t.status for t in again.targets] == ["current", "current"]
    assert again.link_bytes == 0

    # The image under another name only: it is tagged there, nothing is sent.
    sg = env.hosts["sg-1"]
    sg.api.tag(image_id, "elsewhere/fan", "kept")
    sg.api.remove_image(ref)
    tagged = env.push(ref)
    assert [t.status for t in tagged.targets] == ["tagged", "current"]
    assert tagged.link_bytes == 0 and env.host_id("sg-1", ref) == image_id


def test_a_one_line_change_sends_only_that_layer_and_status_shows_drift(env: Env) -> None:
    root = write_env(env.images, "app", deps_mb=8, seed=5, source=True)
    build(env, "app")
    ref = env_ref("app")
    env.push(ref)

    set_line(root, "v2")
    new_id = build(env, "app")
    connect = env.connect()
    before = asyncio.run(env_status(HOSTS, list_envs(env.local), connect_gateway=connect))
    app = {r.host: r for r in before if r.name == "app"}
    assert {app[h].state for h in HOSTS} == {"drift"}

    top = env.local.api.inspect_image(new_id)["RootFS"]["Layers"][-1]
    top_size = layer_tar_size(env.local, ref, -1)
    report = env.push(ref)
    assert report.link_bytes <= 1.05 * top_size, (report.link_bytes, top_size)
    assert [t.layers_sent for t in report.targets] == [(top,), (top,)]
    for host in HOSTS:
        assert env.host_id(host, ref) == new_id
        assert run_on(env, host, ref) == "the one line that changes: v2"

    after = asyncio.run(env_status(HOSTS, list_envs(env.local), connect_gateway=connect))
    assert {r.state for r in after if r.name == "app"} == {"current"}


_KILLER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    import asyncssh
    from client.envs.engine import DockerEngine, connect
    from client.envs.remote import push_via_gateway

    local, port, user, key, cert, known, ref, limit = sys.argv[1:9]
    engine = DockerEngine(connect(local), "local")
    real_save = engine.save

    def cut(ref):
        sent = 0
        for chunk in real_save(ref):
            yield chunk
            sent += len(chunk)
            if sent >= int(limit):
                print(f"killed after {sent} bytes", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    async def gateway():
        return await asyncssh.connect(
            "127.0.0.1", int(port), username=user, known_hosts=known, agent_path=None,
            config=None,
            client_keys=[(asyncssh.read_private_key(key), asyncssh.read_certificate(cert))],
        )

    engine.save = cut
    asyncio.run(push_via_gateway(engine, ref, ["sg-1", "my-1"], connect_gateway=gateway))
    """
)


def test_a_push_killed_halfway_keeps_the_old_image_and_a_retry_completes(env: Env) -> None:
    root = write_env(env.images, "cut", deps_mb=12, seed=3, source=True)
    old_id = build(env, "cut")
    ref = env_ref("cut")
    env.push(ref)

    (root / "deps.bin").write_bytes(random.Random(4).randbytes(12 * 1024 * 1024))
    set_line(root, "new")
    new_id = build(env, "cut")
    user = env.stack.users["dev"]
    child = subprocess.run(
        [sys.executable, "-c", _KILLER, env.daemons["local"].base_url, str(env.stack.port),
         "dev", str(user.key), str(user.cert), str(env.stack.known_hosts), ref,
         str(6 * 1024 * 1024)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert "killed after" in child.stdout

    aborted = wait_events(env, "env.push", 2, image_id=new_id, result="aborted")
    assert {e["host"] for e in aborted} == set(HOSTS)
    assert all(0 < e["bytes_to_host"] < 12 * 1024 * 1024 for e in aborted), aborted
    for host in HOSTS:
        client = env.hosts[host]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and new_id in client.api.images(all=True, quiet=True):
            time.sleep(0.2)
        assert new_id not in client.api.images(all=True, quiet=True)
        assert env.host_id(host, ref) == old_id
        assert run_on(env, host, ref) == "the one line that changes: v1"

    report = env.push(ref)
    assert [t.status for t in report.targets] == ["loaded", "loaded"]
    for host in HOSTS:
        assert env.host_id(host, ref) == new_id
        assert run_on(env, host, ref) == "the one line that changes: new"


def test_a_truncated_archive_ended_cleanly_is_refused_and_the_old_image_stays(env: Env) -> None:
    """Even a client that sends EOF after half an archive cannot break a host."""
    root = write_env(env.images, "trunc", deps_mb=4, seed=6, source=True)
    old_id = build(env, "trunc")
    ref = env_ref("trunc")
    env.push(ref, hosts=["sg-1"])
    set_line(root, "never")
    new_id = build(env, "trunc")
    archive = b"".join(env.local.api.get_image(ref))

    cmd = env.stack.gateway_command(
        env.stack.users["dev"], "gpuhop-env", "load", ref, new_id, "sg-1"
    )
    result = env.stack.run(cmd, input=archive[: len(archive) // 2], timeout=60)
    assert result.returncode == 1, result.stderr
    reply = json.loads(result.stdout)
    host = reply["hosts"]["sg-1"]
    assert host["status"] == "failed" and "docker load failed" in host["error"], host
    assert "\n" not in host["error"]
    assert reply["bytes_received"] == len(archive) // 2
    assert env.host_id("sg-1", ref) == old_id
    assert new_id not in env.hosts["sg-1"].api.images(all=True, quiet=True)


# ---------------------------------------------------------------- policy and errors


def test_a_host_the_user_may_not_use_is_refused_while_the_others_succeed(env: Env) -> None:
    report = env.push(BASE, hosts=["sg-1", "ae-1", "nope-1"], check=False)
    by_host = {t.target: t for t in report.targets}
    assert by_host["sg-1"].status in ("current", "loaded")
    assert by_host["ae-1"].status == "failed"
    assert by_host["ae-1"].error == "denied: user dev has no role that grants host ae-1"
    assert by_host["nope-1"].error == "denied: unknown host nope-1"
    denies = events(env, "channel.deny", user="dev", host="ae-1")
    assert denies and denies[-1]["request"].startswith("gpuhop-env ")

    with pytest.raises(SyncFailed, match=r"failed on 1 host\(s\): ae-1: denied: ") as info:
        env.push(BASE, hosts=["sg-1", "ae-1"])
    assert "\n" not in str(info.value)


def test_a_host_without_docker_is_one_clear_line(env: Env) -> None:
    report = env.push(BASE, hosts=["my-1", "ae-1"], user="ops", check=False)
    by_host = {t.target: t for t in report.targets}
    assert by_host["my-1"].status in ("current", "loaded")
    error = by_host["ae-1"].error or ""
    assert error.startswith("ae-1: ") and "Cannot connect to the Docker daemon" in error, error
    assert "\n" not in error


def test_the_raw_protocol_over_openssh(env: Env) -> None:
    dev = env.stack.users["dev"]
    usage = env.stack.run(env.stack.gateway_command(dev, "gpuhop-env"))
    assert usage.returncode == 2 and usage.stderr.startswith(b"gpuhop-env: unknown or incomplete")

    bad = env.stack.run(env.stack.gateway_command(dev, "gpuhop-env", "load", "x", "nope", "sg-1"))
    assert bad.returncode == 2 and b"not an image ID" in bad.stderr

    listed = env.stack.run(env.stack.gateway_command(dev, "gpuhop-env", "images", "sg-1", "ae-1"))
    assert listed.returncode == 1, listed.stderr  # ae-1 refused
    hosts = json.loads(listed.stdout)["hosts"]
    assert hosts["ae-1"]["status"] == "refused"
    assert hosts["sg-1"]["status"] == "ok"
    base_id = env.local.api.inspect_image(BASE)["Id"]
    assert any(i["id"] == base_id and BASE in i["tags"] for i in hosts["sg-1"]["images"])
    assert events(env, "env.images", user="dev")


def test_a_frozen_host_holds_the_client_back_and_the_push_then_completes(env: Env) -> None:
    """Back-pressure: the gateway buffers a bounded amount for a host that reads nothing.

    my-1's engine is frozen (SIGSTOP) as the archive starts; for 3 s the client
    may only get as far as the buffers between it and that engine allow.
    """
    write_env(env.images, "slow", deps_mb=64, seed=7, source=False)
    image_id = build(env, "slow")
    ref = env_ref("slow")
    engine = DockerEngine(env.local, "local")
    real_save = engine.save
    pulled = [0]
    at_thaw: list[int] = []
    pid = int(env.daemons["my-1"].pidfile.read_text())

    def thaw() -> None:
        at_thaw.append(pulled[0])
        os.kill(pid, signal.SIGCONT)

    timer = threading.Timer(3.0, thaw)

    def save(ref: str) -> Iterator[bytes]:
        for chunk in real_save(ref):
            if pulled[0] == 0:
                os.kill(pid, signal.SIGSTOP)  # my-1's engine stops reading
                timer.start()
            pulled[0] += len(chunk)
            yield chunk

    engine.save = save  # type: ignore[method-assign]
    try:
        report = asyncio.run(push_via_gateway(engine, ref, HOSTS, connect_gateway=env.connect()))
    finally:
        timer.cancel()
        os.kill(pid, signal.SIGCONT)
    assert at_thaw and at_thaw[0] <= 0.5 * report.source_bytes, (at_thaw, report.source_bytes)
    assert report.seconds >= 3.0
    assert [t.status for t in report.targets] == ["loaded", "loaded"]
    for host in HOSTS:
        assert env.host_id(host, ref) == image_id
