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

Prints a table and the ratios. Needs root, dockerd (docker.io), the docker CLI
and busybox; all traffic stays on unix sockets in a temp directory.

    python bench/env_sync.py [--deps-mb 100]
"""

from __future__ import annotations

import argparse
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
from client.envs.spec import load_env
from client.envs.sync import push
from tests.integration.dockerd import Dockerd, import_busybox

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deps-mb", type=int, default=100, help="size of the dependency layer")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("dockerd needs root")

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
