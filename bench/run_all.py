"""Run every side-by-side bench against one gateway and one OpenSSH jump host.

Moderate sizes by default (a few minutes on 2 cores); ``--full`` uses the
issue's sizes (1 GiB transfers, 2,000 idle sessions on both jump hosts).
Prints each figure as it is measured, then a summary table (Markdown).

    python bench/run_all.py [--full] [--no-workers2] [--wait-quiet SECONDS]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import cpu_per_gib
import first_output
import handshakes
import idle_memory
import jump_throughput
from _harness import (
    BenchEnv,
    Figure,
    bench_env,
    check_algorithms,
    cpu_busy_fraction,
    emit,
    fmt_num,
    header,
)


def wait_quiet(limit_s: float, busy_below: float = 0.15) -> None:
    """Wait (at most ``limit_s``) until other work leaves the CPUs mostly idle."""
    deadline = time.monotonic() + limit_s
    busy = cpu_busy_fraction(1.0)
    while busy >= busy_below and time.monotonic() < deadline:
        busy = cpu_busy_fraction(2.0)
    print(f"# CPUs {busy * 100:.0f}% busy before the benches start", flush=True)


def summary(figures: Sequence[Figure]) -> str:
    rows = [
        "| figure | gateway | OpenSSH | ratio | target | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for f in figures:
        ossh = "—" if f.openssh is None else f"{fmt_num(f.openssh)} {f.unit}"
        ratio = "—" if f.ratio is None else f"{f.ratio:.2f}x"
        met = {True: "yes", False: "**no**", None: ""}[f.met]
        target = str(f.target) if f.target else ""
        rows.append(
            f"| {f.name} | {fmt_num(f.gateway)} {f.unit} | {ossh} | {ratio} | {target} | {met} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> list[Figure]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="1 GiB transfers, 2,000 sessions each")
    ap.add_argument("--no-workers2", action="store_true", help="skip handshakes with --workers 2")
    ap.add_argument("--wait-quiet", type=float, default=0.0, help="wait up to N s for idle CPUs")
    args = ap.parse_args(argv)
    size = (1 if args.full else 0.5) * 1024**3
    rounds = 3
    openssh_sessions = 2000 if args.full else 500
    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    idle_memory.raise_nofile(2 * 2000 + 256)

    figures: list[Figure] = []
    steps: list[tuple[str, Callable[[BenchEnv], list[Figure]]]] = [
        ("time to first output", lambda env: first_output.measure(env, 25)),
        ("jump throughput", lambda env: jump_throughput.measure(env, int(size), rounds)),
        ("CPU per GiB", lambda env: cpu_per_gib.measure(env, int(size), rounds)),
        ("handshakes", lambda env: handshakes.measure(env, 4.0, 2, 20)),
        ("idle memory", lambda env: idle_memory.measure(env, 2000, openssh_sessions)),
    ]
    with bench_env() as env:
        for via, algs in check_algorithms(env).items():
            print(f"# {via}: {algs}")
        for title, step in steps:
            header(title, env)
            got = step(env)
            emit(got)
            figures += got
    if not args.no_workers2:
        with bench_env(workers=2) as env:
            header("handshakes, gpuhop-gateway serve --workers 2", env)
            got = handshakes.measure(env, 4.0, 2, 20)
            emit(got)
            figures += got
    print()
    print(summary(figures))
    return figures


if __name__ == "__main__":
    main()
