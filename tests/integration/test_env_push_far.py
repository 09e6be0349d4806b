"""Pushes to far hosts: staged in chunks over parallel channels, resumed after a cut.

A real gateway in front of two OpenSSH hosts with private ``dockerd`` engines:
``sg-1`` on plain loopback (fed from the gateway's tee) and ``ae-1`` behind a
60 ms userspace delay proxy (staged: spooled at the gateway, sent in chunks
over several channels, loaded in one go). ``ae-2`` is far too, but its
staging directory is on a 1 MiB tmpfs (smaller than a chunk).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from client.envs.build import build_env, env_ref
from client.envs.engine import DockerEngine
from client.envs.remote import push_via_gateway
from client.envs.spec import load_env
from client.envs.sync import PushReport
from gateway.services.envprotocol import stage_key
from gpuhop_sim.delayproxy import ThreadedDelayProxy
from gpuhop_sim.sshd import SshdHost
from tests.conftest import missing_peer
from tests.integration.conftest import need_openssh
from tests.integration.dockerd import Dockerd, import_busybox, need_dockerd
from tests.integration.gwstack import GatewayStack
from tests.integration.test_env_push_gateway import (
    _KILLER,
    REPO_ROOT,
    gateway_connector,
    set_line,
    wait_events,
    write_env,
)

pytestmark = [pytest.mark.docker, pytest.mark.openssh, pytest.mark.slow]

BASE = "gpuhop-test/base:1"
NEAR, FAR, FULL = "sg-1", "ae-1", "ae-2"
RTT_MS = 60
STAGING = """env_push_chunk_mib = 2
env_push_streams_per_connection = 2
env_push_connections = 3"""
ROLES = """
[[roles]]
name = "pusher"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]
"""


@dataclass
class Far:
    stack: GatewayStack
    local: docker.DockerClient
    hosts: dict[str, docker.DockerClient]
    daemons: dict[str, Dockerd]
    images: Path
    caches: dict[str, Path]

    def push(self, ref: str, hosts: tuple[str, ...] = (NEAR, FAR), **kw: Any) -> PushReport:
        u = self.stack.users["dev"]
        assert u.cert is not None
        connect = gateway_connector(
            self.stack.port, "dev", str(u.key), str(u.cert), str(self.stack.known_hosts)
        )
        engine = DockerEngine(self.local, "local")
        return asyncio.run(push_via_gateway(engine, ref, hosts, connect_gateway=connect, **kw))

    def host_id(self, host: str, ref: str) -> str:
        return str(self.hosts[host].api.inspect_image(ref)["Id"])

    def staged(self, host: str, image_id: str) -> list[str]:
        d = self.caches[host] / "gpuhop" / "push" / stage_key(image_id)
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def _add_host(
    stack: GatewayStack, name: str, env: dict[str, str], rtt_ms: float
) -> ThreadedDelayProxy | None:
    host = SshdHost(
        name=name,
        directory=stack.root / "hosts" / name,
        gpus=2,
        gpu_model="NVIDIA H100 80GB HBM3",
        user_ca_pub=stack.host_ca_lines(),
        extra_env=env,
    )
    host.start()
    stack.hosts[name] = host
    proxy = None
    port = host.port
    if rtt_ms:
        proxy = ThreadedDelayProxy("127.0.0.1", host.port, rtt_ms, max_in_flight=64 << 20).start()
        port = proxy.port
    stack.host_addresses[name] = ("127.0.0.1", port)
    return proxy


@pytest.fixture(scope="module")
def far(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Far]:
    need_openssh()
    need_dockerd()
    names = ("local", NEAR, FAR)
    daemons = {n: Dockerd(f"far-{n}") for n in names}
    root = tmp_path_factory.mktemp("envfar")
    # Small chunks and lanes, so modest images show the fresh connections joining.
    stack = GatewayStack(root, extra_gateway=STAGING)
    proxies: list[ThreadedDelayProxy] = []
    tiny = root / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tiny)]
    ).returncode
    caches = {NEAR: root / "cache-near", FAR: root / "cache-far", FULL: tiny}
    try:
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda d: d.start(), daemons.values()))
        stack.ca()
        for name, rtt in ((NEAR, 0), (FAR, RTT_MS), (FULL, RTT_MS)):
            engine = daemons[name if name != FULL else FAR].base_url
            env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(caches[name])}
            if (proxy := _add_host(stack, name, env, rtt)) is not None:
                proxies.append(proxy)
        stack.add_user("dev")
        stack.write_config(ROLES, {"dev": ["pusher"]})
        stack.start_gateway()
        clients = {n: d.client() for n, d in daemons.items()}
        import_busybox(clients["local"], BASE)
        yield Far(
            stack,
            clients["local"],
            {NEAR: clients[NEAR], FAR: clients[FAR]},
            daemons,
            tmp_path_factory.mktemp("images"),
            caches if mounted == 0 else {k: v for k, v in caches.items() if k != FULL},
        )
        for client in clients.values():
            client.close()
    finally:
        stack.close()
        for proxy in proxies:
            proxy.stop()
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda d: d.stop(), daemons.values()))
        if mounted == 0:
            subprocess.run(["umount", str(tiny)], check=False)


def build(far: Far, name: str) -> str:
    return build_env(far.local, load_env(far.images, name)).image_id


def test_a_far_host_is_staged_over_parallel_streams_and_a_near_one_fed_from_the_tee(
    far: Far,
) -> None:
    far.push(BASE)
    write_env(far.images, "wide", deps_mb=20, seed=11, source=True)
    image_id = build(far, "wide")
    ref = env_ref("wide")

    report = far.push(ref)

    assert [t.status for t in report.targets] == ["loaded", "loaded"]
    for host in (NEAR, FAR):
        assert far.host_id(host, ref) == image_id
    by_host = {e["host"]: e for e in wait_events(far, "env.push", 2, image_id=image_id)}
    assert "streams" not in by_host[NEAR]  # the tee
    assert by_host[FAR]["streams"] >= 2 and by_host[FAR]["resumed_bytes"] == 0
    # The far host got the same bytes as the near one, just another way; the
    # client sent them once.
    assert by_host[FAR]["bytes_to_host"] == by_host[NEAR]["bytes_to_host"] == report.link_bytes
    assert far.staged(FAR, image_id) == []  # the staging directory is gone after the load


def test_a_large_push_to_a_far_host_spreads_over_fresh_connections(far: Far) -> None:
    write_env(far.images, "large", deps_mb=40, seed=13, source=False)
    image_id = build(far, "large")
    ref = env_ref("large")

    report = far.push(ref, hosts=(FAR,))

    assert [t.status for t in report.targets] == ["loaded"]
    assert far.host_id(FAR, ref) == image_id
    [done] = wait_events(far, "env.push", 1, image_id=image_id, result="loaded")
    assert done["streams"] == 6, done  # 3 connections x 2 channels

    write_env(far.images, "small", deps_mb=1, seed=14, source=False)
    small_id = build(far, "small")
    far.push(env_ref("small"), hosts=(FAR,))
    [small] = wait_events(far, "env.push", 1, image_id=small_id, result="loaded")
    assert small["streams"] == 2, small  # one round of the pooled connection: no extra logins
    assert done["bytes_to_host"] == report.link_bytes


def test_a_cut_off_staged_push_keeps_the_old_image_and_the_retry_sends_only_the_rest(
    far: Far,
) -> None:
    root = write_env(far.images, "resume", deps_mb=24, seed=21, source=True)
    old_id = build(far, "resume")
    ref = env_ref("resume")
    far.push(ref, hosts=(FAR,))

    (root / "deps.bin").write_bytes(random.Random(22).randbytes(24 * 1024 * 1024))
    set_line(root, "new")
    new_id = build(far, "resume")
    user = far.stack.users["dev"]
    killer = _KILLER.replace('["sg-1", "my-1"]', f'["{FAR}"]')
    child = subprocess.run(
        [sys.executable, "-c", killer, far.daemons["local"].base_url, str(far.stack.port),
         "dev", str(user.key), str(user.cert), str(far.stack.known_hosts), ref,
         str(18 * 1024 * 1024)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    [aborted] = wait_events(far, "env.push", 1, image_id=new_id, result="aborted")
    assert aborted["host"] == FAR and aborted["bytes_to_host"] >= 4 * 1024 * 1024, aborted
    assert far.host_id(FAR, ref) == old_id
    assert new_id not in far.hosts[FAR].api.images(all=True, quiet=True)
    kept = [n for n in far.staged(FAR, new_id) if ".part." not in n]
    assert kept, far.staged(FAR, new_id)

    report = far.push(ref, hosts=(FAR,))

    assert [t.status for t in report.targets] == ["loaded"]
    assert far.host_id(FAR, ref) == new_id
    [done] = wait_events(far, "env.push", 1, image_id=new_id, result="loaded")
    assert done["resumed_bytes"] >= 4 * 1024 * 1024, done
    assert done["bytes_to_host"] + done["resumed_bytes"] == report.link_bytes, done
    assert far.staged(FAR, new_id) == []


def test_a_full_disk_on_a_far_host_is_one_line_and_the_others_still_load(far: Far) -> None:
    if FULL not in far.caches:
        missing_peer("mounting a small tmpfs needs root")
    write_env(far.images, "big", deps_mb=6, seed=31, source=False)
    image_id = build(far, "big")
    ref = env_ref("big")

    report = far.push(ref, hosts=(NEAR, FULL), check=False)

    by_host = {t.target: t for t in report.targets}
    assert by_host[NEAR].status == "loaded"
    error = by_host[FULL].error or ""
    assert by_host[FULL].status == "failed" and "No space left on device" in error, error
    assert error.startswith(f"{FULL}: ") and "\n" not in error
    failed = wait_events(far, "env.push", 1, image_id=image_id, host=FULL)
    assert failed and failed[0]["result"] == "failed"
    assert os.statvfs(far.caches[FULL]).f_bfree > 0  # the partial chunk was removed
    assert not list(far.caches[FULL].rglob("*.part.*"))
