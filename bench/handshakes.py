"""Handshakes per second with 20 concurrent clients: the gateway vs an OpenSSH jump sshd.

A handshake here is: TCP connect, key exchange (curve25519-sha256), host key
check, public-key authentication with the user's certificate, and close — on
both jump hosts the same work. Each of 20 concurrent client tasks loops over
it for a fixed time.

The client is asyncssh in a separate process (uvloop), not OpenSSH's ``ssh``:
``ssh`` costs about 11 ms of CPU per connection (fork, exec, config, key
loading, and it has to open a session to exit cleanly), so on a 2-core machine
20 ``ssh`` processes would saturate the machine long before the server does.
The asyncssh client costs about 1.5 ms per handshake. The jump host's own CPU
per handshake is reported too: its reciprocal is what one core of it can do
when the client runs elsewhere.

    python bench/handshakes.py [--seconds 5] [--rounds 2] [--concurrency 20] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from functools import partial
from typing import Any

from _harness import (
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

TARGET = Target("absolute", ">=", 150, "/s")


# -- the client (runs in its own process) ----------------------------------------


async def _client(
    cfg: dict[str, Any], via: str, concurrency: int, seconds: float
) -> dict[str, Any]:
    import asyncssh

    key = asyncssh.read_private_key(cfg["key"])
    cert = asyncssh.read_certificate(cfg["cert"])
    options = asyncssh.SSHClientConnectionOptions(
        username=cfg["logins"][via],
        client_keys=[(key, cert)],
        known_hosts=cfg["known_hosts"],
        kex_algs=[cfg["kex"]],
        encryption_algs=[cfg["cipher"]],
        agent_path=None,
        preferred_auth="publickey",
        connect_timeout=30,
    )
    port = int(cfg["ports"][via])
    done = errors = 0
    last_error = ""
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done, errors, last_error
        while time.monotonic() < end and errors < 50:
            try:
                conn = await asyncssh.connect("127.0.0.1", port, options=options)
                conn.close()
                await conn.wait_closed()
                done += 1
            except (OSError, asyncssh.Error) as exc:
                errors += 1
                last_error = repr(exc)

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - start
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "done": done,
        "errors": errors,
        "last_error": last_error,
        "seconds": elapsed,
        "client_cpu": ru.ru_utime + ru.ru_stime,
    }


def client_main(cfg_json: str, via: str, concurrency: int, seconds: float) -> None:
    cfg = json.loads(cfg_json)
    try:
        import uvloop

        result = uvloop.run(_client(cfg, via, concurrency, seconds))
    except ImportError:
        result = asyncio.run(_client(cfg, via, concurrency, seconds))
    print(json.dumps(result), flush=True)


# -- the bench ------------------------------------------------------------------


def one_round(env: BenchEnv, via: str, concurrency: int, seconds: float) -> dict[str, float]:
    wait_for(lambda: env.connections_idle(via), timeout=15)
    before = tree_cpu_seconds(env.server_pid(via))
    cfg = json.dumps(env.asyncssh_client_args())
    cmd = [sys.executable, __file__, "--client", cfg, via, str(concurrency), str(seconds)]
    res = subprocess.run(cmd, capture_output=True, timeout=seconds + 120)
    if res.returncode != 0:
        raise RuntimeError(f"{via}: client failed: {res.stderr.decode(errors='replace')[-1500:]}")
    out = json.loads(res.stdout.decode().strip().splitlines()[-1])
    if out["errors"]:
        print(f"  {via}: {out['errors']} failed handshakes, last: {out['last_error']}")
    wait_for(lambda: env.connections_idle(via), timeout=15)
    time.sleep(0.3)  # the gateway's last audit writes
    server_cpu = tree_cpu_seconds(env.server_pid(via)) - before
    return {
        "rate": out["done"] / out["seconds"],
        "server_ms": server_cpu / max(1, out["done"]) * 1000,
        "client_ms": out["client_cpu"] / max(1, out["done"]) * 1000,
    }


def measure(env: BenchEnv, seconds: float, rounds: int, concurrency: int) -> list[Figure]:
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VIAS}

    def run(via: str) -> float:
        r = one_round(env, via, concurrency, seconds)
        results[via].append(r)
        return r["rate"]

    rates = interleaved(rounds, {v: partial(run, v) for v in VIAS}, warmup=0)
    cpu = {v: med([r["server_ms"] for r in results[v]]) for v in VIAS}
    client = {v: med([r["client_ms"] for r in results[v]]) for v in VIAS}
    suffix = f" (workers={env.workers})" if env.workers > 1 else ""
    return [
        Figure(
            f"handshakes/s, {concurrency} concurrent{suffix}",
            "/s",
            med(rates["gateway"]),
            med(rates["openssh"]),
            TARGET,
            f"median of {rounds} x {seconds:g} s; client CPU "
            f"{client['gateway']:.1f}/{client['openssh']:.1f} ms per handshake",
        ),
        Figure(
            f"jump-host CPU per handshake{suffix}",
            "ms",
            cpu["gateway"],
            cpu["openssh"],
            None,
            f"one core ≈ {1000 / cpu['gateway']:.0f}/s gateway, "
            f"{1000 / cpu['openssh']:.0f}/s OpenSSH",
        ),
    ]


def main(argv: list[str] | None = None) -> list[Figure]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each, interleaved")
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    args = ap.parse_args(argv)
    with bench_env(workers=args.workers) as env:
        header("handshakes per second", env)
        figures = measure(env, args.seconds, args.rounds, args.concurrency)
        emit(figures)
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--client":
        client_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
