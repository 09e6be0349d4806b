"""Bulk throughput through the gateway vs through an OpenSSH ProxyJump, side by side.

Download: the target runs ``head -c SIZE /dev/zero``; the client times from the
first byte to the last (connection set-up is not part of a rate). Upload: the
target runs ``echo; cat > /dev/null``; once the newline arrives the client
writes SIZE bytes to ``ssh``'s stdin and times until ``ssh`` exits. Runs
alternate gateway / openssh; the median of each is reported with the ratio.

    python bench/jump_throughput.py [--size 1G] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import os
import subprocess
import time
from functools import partial
from typing import cast

from _harness import GIB, VIAS, BenchEnv, Figure, Target, bench_env, emit, header, interleaved
from _harness import median as med

TARGET = Target("ratio", ">=", 0.95)
CHUNK = 1024 * 1024
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def parse_size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def _big_pipe(fd: int) -> None:
    with contextlib.suppress(OSError):  # a smaller pipe only costs more system calls
        fcntl.fcntl(fd, F_SETPIPE_SZ, CHUNK)


def download(env: BenchEnv, via: str, size: int) -> float:
    """Seconds from the first byte to the last of ``size`` bytes from the target."""
    cmd = env.jump_cmd(via, f"head -c {size} /dev/zero")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    reader = cast(io.RawIOBase, proc.stdout)  # bufsize=0: a raw FileIO
    fd = reader.fileno()
    _big_pipe(fd)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    got, first = 0, 0.0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        n = reader.readinto(view)
        if not n:
            break
        if not got:
            first = time.monotonic()
        got += n
    end = time.monotonic()
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0 or got != size:
        raise RuntimeError(f"{via} download: rc={proc.returncode} got {got}/{size}: {err!r}")
    return end - first


def upload(env: BenchEnv, via: str, size: int) -> float:
    """Seconds from the target being ready to ``ssh`` exiting after ``size`` bytes."""
    cmd = env.jump_cmd(via, "echo; exec cat > /dev/null")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
    )
    assert proc.stdin is not None and proc.stdout is not None
    _big_pipe(proc.stdin.fileno())
    if proc.stdout.read(1) != b"\n":
        proc.kill()
        raise RuntimeError(f"{via} upload: target not ready: {proc.stderr.read()!r}")  # type: ignore[union-attr]
    start = time.monotonic()
    zeros = memoryview(bytes(CHUNK))
    fd = proc.stdin.fileno()
    left = size
    while left > 0:
        left -= os.write(fd, zeros[: min(CHUNK, left)])
    proc.stdin.close()
    proc.wait(600)
    end = time.monotonic()
    err = proc.stderr.read() if proc.stderr else b""
    if proc.returncode != 0:
        raise RuntimeError(f"{via} upload: rc={proc.returncode}: {err!r}")
    return end - start


def measure(env: BenchEnv, size: int, rounds: int) -> list[Figure]:
    figures = []
    for name, fn in (("download", download), ("upload", upload)):
        runs = {v: partial(fn, env, v, size) for v in VIAS}
        secs = interleaved(rounds, runs, warmup=0)
        mbps = {v: size / med(secs[v]) / 1e6 for v in VIAS}
        all_rates = ", ".join(
            f"{v} " + "/".join(f"{size / s / 1e6:.0f}" for s in secs[v]) for v in VIAS
        )
        figures.append(
            Figure(
                f"throughput {name} {size / GIB:g} GiB",
                "MB/s",
                mbps["gateway"],
                mbps["openssh"],
                TARGET,
                f"median of {rounds}; runs {all_rates}",
            )
        )
    return figures


def main(argv: list[str] | None = None) -> list[Figure]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G", help="bytes each way (e.g. 256M, 1G)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each, interleaved")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    with bench_env(workers=args.workers) as env:
        header("jump throughput", env)
        figures = measure(env, parse_size(args.size), args.rounds)
        emit(figures)
    return figures


if __name__ == "__main__":
    main()
