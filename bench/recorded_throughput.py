"""scp throughput in recorded mode vs OpenSSH ProxyJump, side by side.

OpenSSH 9's ``scp`` speaks SFTP, which recorded mode relays and audits per
operation (file opened, bytes read and written, closed), never byte for byte.
Upload: ``scp -J gwr|ojump FILE root@sg-1:PATH``; download:
``scp -J gwr|ojump root@sg-1:PATH FILE``. Each run is timed from spawning
``scp`` to its exit (both handshakes and the SFTP start included: about 0.1 s
of a several-second run). Files live in ``/dev/shm`` on both ends (the target
is on this machine), so no disk is timed. Runs alternate gateway / openssh;
medians are reported with the ratio, each run's rate, and the jump host's CPU
per GiB (gateway process, or the OpenSSH jump sshd with its reaped children).
The first copy each way is compared byte for byte, and the gateway's audit
log must hold an ``sftp.file`` event with the right byte count for every
gateway run. ``--direct`` adds the direct form, ``scp FILE rita+sg-1@gw:PATH``
(one SSH connection from the client, no inner session for the gateway to
terminate), as a figure without a target.

    python bench/recorded_throughput.py [--size 1G] [--rounds 3] [--direct]
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from _harness import (
    GIB,
    REC_USER,
    VIAS,
    BenchEnv,
    Figure,
    Target,
    bench_env,
    cpu_seconds,
    emit,
    header,
    interleaved,
    tree_cpu_seconds,
    wait_for,
    wait_quiet,
)
from _harness import median as med
from jump_throughput import parse_size

TARGET = Target("ratio", ">=", 0.8)
CHUNK = 8 * 1024 * 1024


@contextlib.contextmanager
def shm_dir() -> Iterator[Path]:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    d = Path(tempfile.mkdtemp(prefix="gpuhop-rec-bench-", dir=base))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def make_source(path: Path, size: int) -> None:
    """``size`` random bytes (no compression or zero-page shortcut can help anyone)."""
    block = os.urandom(CHUNK)
    with path.open("wb") as f:
        left = size
        while left > 0:
            n = min(CHUNK, left)
            f.write(block[:n])
            left -= n


def jump_cpu(env: BenchEnv, via: str) -> float:
    if via in ("gateway", "direct"):
        return tree_cpu_seconds(env.gateway_pid)
    # Per-connection sshd children must be gone (reaped) for cutime to include them.
    wait_for(lambda: env.connections_idle("openssh"), 10)
    return cpu_seconds(env.jump_pid)


class Runner:
    def __init__(self, env: BenchEnv, work: Path, size: int) -> None:
        self.env, self.work, self.size = env, work, size
        self.src = work / "src"
        self.cpu: dict[tuple[str, str], list[float]] = {}
        self.compared: set[tuple[str, str]] = set()
        self.audited: dict[str, int] = {"upload": 0, "download": 0}

    def run(self, direction: str, via: str) -> float:
        env = self.env
        if direction == "upload":
            dst = self.work / f"up-{via}"
            cmd = env.scp_cmd(via, str(self.src), f":{dst}")
        else:
            dst = self.work / f"down-{via}"
            cmd = env.scp_cmd(via, f":{self.src}", str(dst))
        dst.unlink(missing_ok=True)
        cpu0 = jump_cpu(env, via)
        start = time.monotonic()
        res = subprocess.run(cmd, capture_output=True, timeout=900)
        secs = time.monotonic() - start
        cpu1 = jump_cpu(env, via)
        if res.returncode != 0 or not dst.exists() or dst.stat().st_size != self.size:
            raise RuntimeError(
                f"{via} {direction}: rc={res.returncode} err={res.stderr.decode(errors='replace')}"
            )
        if (direction, via) not in self.compared:
            if not filecmp.cmp(self.src, dst, shallow=False):
                raise RuntimeError(f"{via} {direction}: the copy differs from the source")
            self.compared.add((direction, via))
        dst.unlink()
        self.cpu.setdefault((direction, via), []).append((cpu1 - cpu0) / (self.size / GIB))
        if via != "openssh":
            self.audited[direction] += 1
        return secs

    def check_audit(self) -> str:
        """Every gateway run left its per-operation record (SFTP is audited, not recorded)."""
        key = {"upload": "bytes_written", "download": "bytes_read"}

        def counts() -> dict[str, int]:
            files = [
                e
                for e in self.env.stack.audit_events("sftp.file")
                if e.get("user") == REC_USER and str(e.get("path", "")).startswith(str(self.work))
            ]
            return {d: sum(1 for e in files if e.get(key[d]) == self.size) for d in key}

        ok = wait_for(lambda: all(counts()[d] >= n for d, n in self.audited.items()), 10)
        got = counts()
        if not ok:
            raise RuntimeError(f"sftp.file audit events missing: want {self.audited}, got {got}")
        return f"audited sftp.file events {got['upload']} up / {got['download']} down"


def measure(env: BenchEnv, size: int, rounds: int, direct: bool = False) -> list[Figure]:
    vias = (*VIAS, "direct") if direct else VIAS
    with shm_dir() as work:
        make_source(work / "src", size)
        runner = Runner(env, work, size)
        figures = []
        for direction in ("upload", "download"):
            runs = {v: partial(runner.run, direction, v) for v in vias}
            secs = interleaved(rounds, runs, warmup=0)
            mbps = {v: size / med(secs[v]) / 1e6 for v in vias}
            rates = ", ".join(
                f"{v} " + "/".join(f"{size / s / 1e6:.0f}" for s in secs[v]) for v in vias
            )
            cpu = ", ".join(f"{v} {med(runner.cpu[(direction, v)]):.2f}" for v in vias)
            note = f"median of {rounds}; runs {rates} MB/s; jump-host CPU s/GiB {cpu}"
            figures.append(
                Figure(
                    f"recorded scp {direction} {size / GIB:g} GiB",
                    "MB/s",
                    mbps["gateway"],
                    mbps["openssh"],
                    TARGET,
                    note,
                )
            )
            if direct:  # no target: the other form, for comparison
                figures.append(
                    Figure(
                        "  same, scp rita+sg-1@gw: (direct form)",
                        "MB/s",
                        mbps["direct"],
                        mbps["openssh"],
                    )
                )
        audit = runner.check_audit()
    print(f"# {audit}", flush=True)
    return figures


def main(argv: list[str] | None = None) -> list[Figure]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G", help="file size (e.g. 256M, 1G)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each, interleaved")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument(
        "--direct", action="store_true", help="also time scp rita+sg-1@gw: (no -J), no target"
    )
    ap.add_argument("--wait-quiet", type=float, default=0.0, help="wait up to N s for idle CPUs")
    args = ap.parse_args(argv)
    if args.wait_quiet > 0:
        busy = wait_quiet(min(args.wait_quiet, 3600.0))
        print(f"# CPUs {busy * 100:.0f}% busy before the bench starts", flush=True)
    size = parse_size(args.size)
    if not 0 < size <= 16 * GIB:
        ap.error("--size must be between 1 byte and 16 GiB")
    with bench_env(workers=args.workers) as env:
        header("recorded mode: scp (SFTP) throughput", env)
        figures = measure(env, size, max(1, min(args.rounds, 50)), args.direct)
        emit(figures)
    return figures


if __name__ == "__main__":
    main()
