"""Time from starting ``ssh -J … echo x`` to the first byte of its output, side by side.

Each run starts a fresh ``ssh`` (no connection sharing): TCP and SSH handshake
to the jump host, authentication, ``direct-tcpip`` to the target, the inner
handshake and authentication, the exec, and the first byte of output. Runs
alternate gateway / openssh; the median of each is reported with the ratio.

    python bench/first_output.py [--runs 25]
"""

from __future__ import annotations

import argparse
import select
import subprocess
import time
from functools import partial

from _harness import VIAS, BenchEnv, Figure, Target, bench_env, emit, header, interleaved
from _harness import median as med

TARGET = Target("ratio", "<=", 0.8)


def first_output_s(env: BenchEnv, via: str) -> float:
    """Seconds from spawning ``ssh`` to the first byte on its stdout."""
    cmd = env.jump_cmd(via, "echo x")
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    first = time.monotonic()
    data = proc.stdout.read(1) if ready else b""
    out, err = proc.communicate(timeout=30)
    if proc.returncode != 0 or data + out != b"x\n":
        raise RuntimeError(f"{via}: rc={proc.returncode} out={data + out!r} err={err!r}")
    return first - start


def measure(env: BenchEnv, runs: int) -> list[Figure]:
    secs = interleaved(runs, {v: partial(first_output_s, env, v) for v in VIAS})
    ms = {v: med(secs[v]) * 1000 for v in VIAS}
    spread = ", ".join(f"{v} {min(secs[v]) * 1000:.0f}-{max(secs[v]) * 1000:.0f} ms" for v in VIAS)
    return [
        Figure(
            "time to first output (echo x)",
            "ms",
            ms["gateway"],
            ms["openssh"],
            TARGET,
            f"median of {runs}; range {spread}",
        )
    ]


def main(argv: list[str] | None = None) -> list[Figure]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=25, help="runs of each (≥ 20), interleaved")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    with bench_env(workers=args.workers) as env:
        header("time to first output", env)
        figures = measure(env, args.runs)
        emit(figures)
    return figures


if __name__ == "__main__":
    main()
