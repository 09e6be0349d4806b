"""Time to first output in recorded mode vs OpenSSH ProxyJump, side by side.

From spawning ``ssh`` to the first byte of ``echo x`` on its stdout, fresh
``ssh`` process each time (no connection sharing on the client):

* ``ssh -J gwr root@sg-1 echo x`` — recorded mode: the gateway answers the
  inner hop itself (host certificate from its host CA), then re-originates the
  exec on its own connection to the host. **cold**: the gateway has no
  connection to the host and makes one (a third key exchange); **warm**: it
  reuses the one a previous session left (what users see but for the first
  session after ``upstream_idle_s``);
* ``ssh rita+sg-1@gwr echo x`` — the direct form: one SSH connection from the
  client, the host reached over the gateway's kept connection (cold and warm);
* ``ssh -J ojump root@sg-1 echo x`` — OpenSSH: two handshakes, two logins.

The gateway runs with ``upstream_idle_s = 2`` so that a cold run is a pause
away: before each cold run the bench waits until the kept connection has been
dropped. Every gateway run is classified by what the target's sshd log shows
(a new ``gpuhop:rita`` login or not), not by assumption. Each round runs, in
order: jump cold, jump warm, direct warm, OpenSSH, (pause) direct cold,
OpenSSH; OpenSSH's figure is the median of both of its runs per round.

    python bench/recorded_first_output.py [--runs 21]
"""

from __future__ import annotations

import argparse
import select
import subprocess
import time
from functools import partial

from _harness import (
    REC_USER,
    BenchEnv,
    Figure,
    Target,
    bench_env,
    emit,
    header,
    wait_for,
    wait_quiet,
)
from _harness import median as med

JUMP_TARGET = Target("ratio", "<=", 1.0)
DIRECT_TARGET = Target("ratio", "<=", 0.8)
IDLE_S = 2.0
# The pool's reaper looks every max(0.5, idle/4) s: dropped by IDLE_S + 0.5 after release.
DRAIN_S = IDLE_S + 0.8


def upstream_logins(env: BenchEnv) -> int:
    """Logins of the gateway's upstream certificate for the bench user, per the target's log."""
    text = env.target.log_path.read_text(errors="replace")
    return text.count(f'ID "gpuhop:{REC_USER}:')


def logged_in_since(env: BenchEnv, before: int) -> bool:
    return upstream_logins(env) > before


def first_output_s(cmd: list[str], what: str) -> float:
    """Seconds from spawning ``cmd`` to the first byte on its stdout (which must be ``x\\n``)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    first = time.monotonic()
    data = proc.stdout.read(1) if ready else b""
    out, err = proc.communicate(timeout=30)
    if proc.returncode != 0 or data + out != b"x\n":
        raise RuntimeError(f"{what}: rc={proc.returncode} out={data + out!r} err={err!r}")
    return first - start


def gateway_run(env: BenchEnv, cmd: list[str], what: str, cold: bool) -> tuple[bool, float]:
    """One gateway run, meant to be cold (after the kept connection is dropped) or warm.

    Returns (was it cold, seconds): what the target's log shows decides, so a
    "warm" run on a loaded machine that found the connection gone counts as cold.
    """
    for _ in range(3):  # a cold run that still found a kept connection: wait once more
        if cold:
            time.sleep(DRAIN_S)
        before = upstream_logins(env)
        secs = first_output_s(cmd, what)
        # sshd logs the login before the exec, so it is on disk by the first output.
        was_cold = wait_for(partial(logged_in_since, env, before), 0.3 if cold else 0.0)
        if was_cold or not cold:
            return was_cold, secs
    raise RuntimeError(f"{what}: the upstream connection was never dropped; no cold run")


def measure(env: BenchEnv, runs: int) -> list[Figure]:
    jump = env.rec_jump_cmd("gateway", "echo x")
    direct = env.rec_direct_cmd("echo x")
    ossh = env.rec_jump_cmd("openssh", "echo x")
    # (form, meant cold?) or None for OpenSSH; warm runs follow a run of the same user.
    order: list[tuple[str, bool] | None] = [
        ("jump", True),
        ("jump", False),
        ("direct", False),
        None,
        ("direct", True),
        None,
    ]
    cmds = {"jump": jump, "direct": direct}
    secs: dict[str, list[float]] = {
        k: [] for k in ("jump cold", "jump warm", "direct warm", "direct cold", "openssh")
    }
    for i in range(1 + runs):  # one unrecorded warm-up round
        for step in order:
            if step is None:
                key, value = "openssh", first_output_s(ossh, "openssh")
            else:
                form, cold = step
                was_cold, value = gateway_run(env, cmds[form], form, cold)
                key = f"{form} {'cold' if was_cold else 'warm'}"
            if i:
                secs[key].append(value)
    ms = {k: med(v) * 1000 for k, v in secs.items()}

    def spread(k: str) -> str:
        if not secs[k]:
            return "none"
        return f"{min(secs[k]) * 1000:.0f}-{max(secs[k]) * 1000:.0f}"

    o = ms["openssh"]
    n_o = len(secs["openssh"])
    figures = []
    for name, form, target in (
        ("jump cold", "ssh -J", JUMP_TARGET),
        ("jump warm", "ssh -J", JUMP_TARGET),
        ("direct warm", "rita+sg-1@gw", DIRECT_TARGET),
        ("direct cold", "rita+sg-1@gw", DIRECT_TARGET),
    ):
        figures.append(
            Figure(
                f"first output, recorded {form} {name.split()[1]}",
                "ms",
                ms[name],
                o,
                target,
                f"medians of {len(secs[name])} and {n_o} (openssh ProxyJump); "
                f"ranges {spread(name)} / {spread('openssh')} ms",
            )
        )
    return figures


def main(argv: list[str] | None = None) -> list[Figure]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21, help="rounds (each runs every kind once)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--wait-quiet", type=float, default=0.0, help="wait up to N s for idle CPUs")
    args = ap.parse_args(argv)
    if args.wait_quiet > 0:
        busy = wait_quiet(min(args.wait_quiet, 3600.0))
        print(f"# CPUs {busy * 100:.0f}% busy before the bench starts", flush=True)
    runs = max(1, min(args.runs, 500))
    with bench_env(workers=args.workers, extra_gateway=f"upstream_idle_s = {IDLE_S}") as env:
        header("recorded mode: time to first output (echo x)", env)
        figures = measure(env, runs)
        emit(figures)
    return figures


if __name__ == "__main__":
    main()
