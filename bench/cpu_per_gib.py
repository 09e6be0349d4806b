"""Jump-host CPU seconds per GiB forwarded: the gateway vs an OpenSSH jump sshd.

Each run moves SIZE bytes through one jump host (download, then upload, as in
``jump_throughput.py``) and reads the jump host's CPU time from /proc before
and after:

* gateway — utime + stime of the ``serve`` process, plus its children's
  (cutime + cstime, and any live worker processes with ``--workers``);
* openssh — the listening sshd's own time plus cutime + cstime, read after
  every per-connection child (monitor and session process) has exited and been
  reaped, so all of their CPU has been added to the listener.

Each connection's handshake is included (a fixed cost, small beside a GiB).

    python bench/cpu_per_gib.py [--size 1G] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

from _harness import (
    GIB,
    VIAS,
    BenchEnv,
    Figure,
    Target,
    bench_env,
    emit,
    header,
    interleaved,
    tree_cpu_seconds,
    wait_for,
)
from _harness import median as med
from jump_throughput import download, parse_size, upload

TARGET = Target("ratio", "<=", 1.5)


def _settled_cpu(env: BenchEnv, via: str) -> float:
    """Jump-host CPU once its per-connection processes (if any) are gone."""
    if not wait_for(lambda: env.connections_idle(via), timeout=15):
        raise RuntimeError(f"{via}: connection processes did not exit")
    time.sleep(0.1)  # let the gateway finish its end-of-session audit write
    return tree_cpu_seconds(env.server_pid(via))


def cpu_for(env: BenchEnv, via: str, direction: str, size: int) -> float:
    """CPU seconds the jump host spent moving ``size`` bytes one way."""
    before = _settled_cpu(env, via)
    (download if direction == "down" else upload)(env, via, size)
    return _settled_cpu(env, via) - before


def measure(env: BenchEnv, size: int, rounds: int) -> list[Figure]:
    figures = []
    per_gib: dict[str, dict[str, float]] = {}
    for direction in ("down", "up"):
        runs = {v: partial(cpu_for, env, v, direction, size) for v in VIAS}
        secs = interleaved(rounds, runs, warmup=0)
        per_gib[direction] = {v: med(secs[v]) / (size / GIB) for v in VIAS}
        name = "download" if direction == "down" else "upload"
        figures.append(
            Figure(
                f"CPU per GiB, {name}",
                "s/GiB",
                per_gib[direction]["gateway"],
                per_gib[direction]["openssh"],
                TARGET,
                f"median of {rounds} x {size / GIB:g} GiB",
            )
        )
    both = {v: per_gib["down"][v] + per_gib["up"][v] for v in VIAS}
    figures.append(
        Figure(
            "CPU per GiB, 1 GiB each way",
            "s",
            both["gateway"],
            both["openssh"],
            TARGET,
            "sum of the two medians",
        )
    )
    return figures


def main(argv: list[str] | None = None) -> list[Figure]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G", help="bytes per run (e.g. 256M, 1G)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each, interleaved")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    with bench_env(workers=args.workers) as env:
        header("CPU per GiB forwarded", env)
        figures = measure(env, parse_size(args.size), args.rounds)
        emit(figures)
    return figures


if __name__ == "__main__":
    main()
