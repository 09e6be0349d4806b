"""How much does a push cost, against a naive ``docker save | docker load``?

Starts private Docker engines (the developer's and three hosts), builds an
environment (busybox base, a DEPS_MB dependency layer, ~1 MB of source on top),
and measures in the same run, bytes and seconds:

* naive first push: full ``docker save`` piped to ``docker load`` (CLI, as a person would);
* gpuhop first push: ``client.envs.sync.push`` (thin archive, image ID verified);
* after changing one line of the source: naive re-push (the whole image again)
  vs gpuhop re-push (only the top layer);
* the same change to two hosts at once: bytes over the client's link (once) vs
  naive (once per host).

Then a far host: a first push of a FAR_MB image to a host behind a 120 ms
userspace delay proxy, ``gpuhop env push`` through a real gateway (which stages
the archive there over parallel channels) against the naive single stream
``docker save | ssh host docker load`` (OpenSSH, through an identical proxy to
an identical host), interleaved over ``--far-rounds``. The proxies carry up to
64 MiB in flight per direction, so they cap neither; a single SSH channel is
capped by the host sshd's 2 MiB channel window per round trip.

Prints tables and the ratios. Needs root, dockerd (docker.io), OpenSSH and
busybox; all traffic stays on unix sockets and loopback.

    python bench/env_sync.py [--deps-mb 100] [--far-mb 200] [--far-rounds 2] [--rtt 120]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.envs.build import build_env, env_ref
from client.envs.engine import DockerEngine
from client.envs.remote import push_via_gateway
from client.envs.spec import load_env
from client.envs.sync import push
from gpuhop_sim.delayproxy import ThreadedDelayProxy
from gpuhop_sim.sshd import SshdHost
from tests.integration.dockerd import Dockerd, import_busybox
from tests.integration.gwstack import GatewayStack
from tests.integration.test_env_push_gateway import gateway_connector

BASE = "gpuhop-bench/base:1"
LINES = 20_000


def naive(local: Dockerd, host: Dockerd, ref: str) -> tuple[int, float]:
    """``docker save ref | docker load`` between two engines; (bytes, seconds)."""
    cli = shutil.which("docker") or "docker"
    started = time.perf_counter()
    save = subprocess.Popen([cli, "-H", local.base_url, "save", ref], stdout=subprocess.PIPE)
    load = subprocess.Popen(
        [cli, "-H", host.base_url, "load", "-q"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    assert save.stdout is not None and load.stdin is not None
    sent = 0
    while chunk := save.stdout.read(1 << 20):
        load.stdin.write(chunk)
        sent += len(chunk)
    load.stdin.close()
    if save.wait() != 0 or load.wait() != 0:
        raise SystemExit("naive docker save | docker load failed")
    return sent, time.perf_counter() - started


def write_env(images: Path, deps_mb: int, version: str) -> None:
    root = images / "bench"
    (root / "src").mkdir(parents=True, exist_ok=True)
    if not (root / "deps.bin").exists():
        (root / "deps.bin").write_bytes(random.Random(7).randbytes(deps_mb * 1024 * 1024))
        (root / "Dockerfile").write_text(
            f'FROM {BASE}\nCOPY deps.bin /opt/deps.bin\nCOPY src/ /app/\nCMD ["true"]\n'
        )
    lines = [f"line {i:05d} of the application source, unchanged\n" for i in range(LINES)]
    lines[LINES // 2] = f"the one line that changes: {version}\n"
    (root / "src" / "main.txt").write_text("".join(lines))


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


FAR_ROLES = """
[[roles]]
name = "pusher"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]
"""


def far_push(args: argparse.Namespace) -> None:
    """First push of a large image to a far host: gpuhop (staged, parallel) vs one naive stream."""
    names = ("local", "ae-1", "ae-2")  # ae-1 gets gpuhop's pushes, ae-2 the naive stream
    daemons = {n: Dockerd(f"bench-far-{n}") for n in names}
    root = Path(tempfile.mkdtemp(prefix="gpuhop-bench-far-"))
    stack = GatewayStack(root)
    proxies: list[ThreadedDelayProxy] = []
    try:
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda d: d.start(), daemons.values()))
        for name in ("ae-1", "ae-2"):
            host = SshdHost(
                name=name,
                directory=root / "hosts" / name,
                user_ca_pub=stack.host_ca_lines(),
                extra_env={"DOCKER_HOST": daemons[name].base_url},
            )
            host.start()
            stack.hosts[name] = host
            proxy = ThreadedDelayProxy("127.0.0.1", host.port, args.rtt, max_in_flight=64 << 20)
            proxies.append(proxy.start())
            stack.host_addresses[name] = ("127.0.0.1", proxy.port)
        user = stack.add_user("dev")
        stack.write_config(FAR_ROLES, {"dev": ["pusher"]})
        stack.start_gateway()
        assert user.cert is not None
        known = root / "naive_known_hosts"
        port = stack.host_addresses["ae-2"][1]
        known.write_text(f"[127.0.0.1]:{port} {stack.hosts['ae-2'].host_key_line}\n")
        ssh = ["ssh", "-p", str(port), "-i", str(user.key), "-o", f"CertificateFile={user.cert}",
               "-o", f"UserKnownHostsFile={known}", "-o", "BatchMode=yes", "-F", "/dev/null",
               "root@127.0.0.1"]  # fmt: skip

        local = daemons["local"].client(timeout=600)
        hosts = {n: daemons[n].client(timeout=600) for n in ("ae-1", "ae-2")}
        import_busybox(local, BASE)
        images = root / "images"
        (images / "far").mkdir(parents=True)
        (images / "far" / "deps.bin").write_bytes(
            random.Random(9).randbytes(args.far_mb * 1024 * 1024)
        )
        (images / "far" / "Dockerfile").write_text(
            f'FROM {BASE}\nCOPY deps.bin /opt/deps.bin\nCMD ["true"]\n'
        )
        ref = env_ref("far")
        image_id = build_env(local, load_env(images, "far")).image_id
        engine = DockerEngine(local, "local")
        connect = gateway_connector(
            stack.port, "dev", str(user.key), str(user.cert), str(stack.known_hosts)
        )
        time.sleep(3)  # the gateway's probes measure the far host's round trip

        def forget(name: str) -> None:
            """Back to an empty engine, so the next round is a first push again."""
            for image in hosts[name].images.list(all=True):
                hosts[name].images.remove(image.id, force=True)
            assert not hosts[name].images.list(all=True)

        def naive_run() -> tuple[int, float]:
            started = time.perf_counter()
            save = subprocess.Popen(
                ["docker", "-H", daemons["local"].base_url, "save", ref], stdout=subprocess.PIPE
            )
            load = subprocess.run([*ssh, "docker load -q"], stdin=save.stdout, capture_output=True)
            if save.wait() != 0 or load.returncode != 0:
                raise SystemExit(f"naive push failed: {load.stderr.decode().strip()}")
            elapsed = time.perf_counter() - started
            assert hosts["ae-2"].api.inspect_image(ref)["Id"] == image_id
            return full_size, elapsed

        def gpuhop_run() -> tuple[int, float]:
            started = time.perf_counter()
            report = asyncio.run(push_via_gateway(engine, ref, ["ae-1"], connect_gateway=connect))
            elapsed = time.perf_counter() - started
            assert [t.status for t in report.targets] == ["loaded"], report
            assert hosts["ae-1"].api.inspect_image(ref)["Id"] == image_id
            return report.link_bytes, elapsed

        full_size = sum(len(c) for c in local.api.get_image(ref))
        naive_s: list[float] = []
        gpuhop_s: list[float] = []
        for round_ in range(args.far_rounds):
            if round_:
                forget("ae-1")
                forget("ae-2")
            for label, fn, into in (
                ("naive", naive_run, naive_s),
                ("gpuhop", gpuhop_run, gpuhop_s),
            ):
                sent, secs = fn()
                into.append(secs)
                print(f"# round {round_ + 1} {label}: {sent:,} bytes in {secs:.2f} s"
                      f" ({sent / secs / 1e6:.1f} MB/s)", flush=True)  # fmt: skip
        n, g = sorted(naive_s)[len(naive_s) // 2], sorted(gpuhop_s)[len(gpuhop_s) // 2]
        print(f"far host ({args.rtt:.0f} ms round trip), first push of {full_size / 1e6:.0f} MB,"
              f" median of {args.far_rounds}:")  # fmt: skip
        for label, secs in (
            ("naive docker save | ssh host docker load", n),
            ("gpuhop env push (staged, parallel)", g),
        ):
            print(f"  {label:42} {secs:7.2f} s ({full_size / secs / 1e6:5.1f} MB/s)")
        for line in (root / "gateway.log").read_text(errors="replace").splitlines():
            if "staged push" in line:
                print(f"# gateway: {line.strip()}")
        verdict = "met" if n / g >= 2 else "MISSED"
        print(f"  speed-up: {n / g:.2f}x (target >= 2x: {verdict})")
        local.close()
        for client in hosts.values():
            client.close()
    finally:
        stack.close()
        for proxy in proxies:
            proxy.stop()
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda d: d.stop(), daemons.values()))
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deps-mb", type=int, default=100, help="size of the dependency layer")
    parser.add_argument("--far-mb", type=int, default=200, help="image size for the far push")
    parser.add_argument("--far-rounds", type=int, default=2, help="interleaved far rounds")
    parser.add_argument("--rtt", type=float, default=120.0, help="far host round trip, ms")
    parser.add_argument("--only-far", action="store_true", help="skip the local cases")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("dockerd needs root")
    if not args.only_far:
        local_pushes(args)
    far_push(args)


def local_pushes(args: argparse.Namespace) -> None:

    names = ("local", "naive", "gpuhop", "gpuhop-2")
    daemons = {n: Dockerd(f"bench-{n}") for n in names}
    images = Path(tempfile.mkdtemp(prefix="gpuhop-bench-images-"))
    try:
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda d: d.start(), daemons.values()))
        clients = {n: d.client(timeout=600) for n, d in daemons.items()}
        import_busybox(clients["local"], BASE)
        engines = {n: DockerEngine(c, n) for n, c in clients.items()}
        ref = env_ref("bench")
        write_env(images, args.deps_mb, "v1")
        build_env(clients["local"], load_env(images, "bench"))

        rows: list[tuple[str, int, float, int, float]] = []
        n_bytes, n_secs = naive(daemons["local"], daemons["naive"], ref)
        report, g_secs = timed(lambda: push(engines["local"], ref, [engines["gpuhop"]]))
        rows.append(("first push", n_bytes, n_secs, report.link_bytes, g_secs))  # type: ignore[attr-defined]
        push(engines["local"], ref, [engines["gpuhop-2"]])

        write_env(images, args.deps_mb, "v2")
        build_env(clients["local"], load_env(images, "bench"))
        n_bytes, n_secs = naive(daemons["local"], daemons["naive"], ref)
        report, g_secs = timed(lambda: push(engines["local"], ref, [engines["gpuhop"]]))
        rows.append(("re-push, one line changed", n_bytes, n_secs, report.link_bytes, g_secs))  # type: ignore[attr-defined]

        write_env(images, args.deps_mb, "v3")
        build_env(clients["local"], load_env(images, "bench"))
        two = [engines["gpuhop"], engines["gpuhop-2"]]
        report, g_secs = timed(lambda: push(engines["local"], ref, two))
        n_bytes, n_secs = 0, 0.0
        for _ in range(2):
            b, s = naive(daemons["local"], daemons["naive"], ref)
            n_bytes, n_secs = n_bytes + b, n_secs + s
        rows.append(("one line changed, 2 hosts", n_bytes, n_secs, report.link_bytes, g_secs))  # type: ignore[attr-defined]

        ids = {clients[n].api.inspect_image(ref)["Id"] for n in ("local", "gpuhop", "gpuhop-2")}
        assert len(ids) == 1, "image IDs differ between the developer and the hosts"

        print(f"image: {args.deps_mb} MB dependency layer + ~1 MB source layer (unix sockets)")
        print(f"{'case':28} {'naive bytes':>14} {'naive s':>8} {'gpuhop bytes':>14} {'gpuhop s':>9}"
              f" {'bytes ratio':>12} {'speed-up':>9}")  # fmt: skip
        for case, nb, ns, gb, gs in rows:
            print(f"{case:28} {nb:>14,} {ns:>8.2f} {gb:>14,} {gs:>9.2f} {nb / max(gb, 1):>11.1f}x"
                  f" {ns / max(gs, 1e-9):>8.1f}x")  # fmt: skip
        print(
            "bytes ratio = naive / gpuhop bytes over the client's link; speed-up = naive / gpuhop s"
        )
        for client in clients.values():
            client.close()
    finally:
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda d: d.stop(), daemons.values()))
        shutil.rmtree(images, ignore_errors=True)


if __name__ == "__main__":
    main()
