"""Memory per idle authenticated session: the gateway vs an OpenSSH jump sshd.

A separate client process (asyncssh, RLIMIT_NOFILE raised) opens N
authenticated SSH connections to one jump host, 25 at a time, and holds them
idle. The jump host's memory is read from /proc/PID/smaps_rollup:

* gateway — Pss and Rss of the ``serve`` process with the N sessions open,
  minus the same with none open (measured after a warm-up batch has been opened
  and closed, so one-off imports and caches are not counted), divided by N;
  the note adds the marginal cost (slope from N/4 to N sessions open);
* openssh — the sum of Pss over every process below the listener (whatever
  sshd keeps per connection; the count is printed), divided by N. Pss splits
  shared pages fairly between processes, so the sum is what the sessions
  really cost.

OpenSSH keeps one process per authenticated connection here (about 1.3 MiB
Pss each); 2,000 of them fit on a 2-core / 24 GiB machine (about 45 s to open),
so the default measures both at 2,000. ``run_all.py`` uses 500 for OpenSSH
unless ``--full`` (the per-session cost does not depend on N: sessions share
nothing but read-only pages).

    python bench/idle_memory.py [--sessions 2000] [--openssh-sessions 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from _harness import (
    BenchEnv,
    Figure,
    Target,
    bench_env,
    emit,
    header,
    memory_kib,
    tree_memory_kib,
    wait_for,
)

TARGET = Target("absolute", "<=", 64, "KiB")
BATCH = 25


def raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


# -- the client (runs in its own process) ----------------------------------------


async def _hold(cfg: dict[str, Any], via: str, n: int) -> None:
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
        connect_timeout=60,
        keepalive_interval=0,
    )
    port = int(cfg["ports"][via])
    conns: list[Any] = []
    for start in range(0, n, BATCH):
        batch = min(BATCH, n - start)
        conns += await asyncio.gather(
            *(asyncssh.connect("127.0.0.1", port, options=options) for _ in range(batch))
        )
    print(json.dumps({"open": len(conns)}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # held until told to close
    for c in conns:
        c.close()
    await asyncio.gather(*(c.wait_closed() for c in conns))
    print(json.dumps({"closed": len(conns)}), flush=True)


def client_main(cfg_json: str, via: str, n: int) -> None:
    raise_nofile(n + 256)
    cfg = json.loads(cfg_json)
    try:
        import uvloop

        uvloop.run(_hold(cfg, via, n))
    except ImportError:
        asyncio.run(_hold(cfg, via, n))


class Holder:
    """N idle sessions held open by a client process until ``close()``."""

    def __init__(self, env: BenchEnv, via: str, n: int) -> None:
        cfg = json.dumps(env.asyncssh_client_args())
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--client", cfg, via, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # bounded: the client connects with a timeout
        if not line or json.loads(line).get("open") != n:
            self.proc.kill()
            raise RuntimeError(f"{via}: could not open {n} sessions (client said {line!r})")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("close\n")
        self.proc.stdin.flush()
        self.proc.wait(120)


# -- the bench ------------------------------------------------------------------


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def gateway_per_session(env: BenchEnv, n: int) -> tuple[float, float, float, int]:
    """Per idle session on the gateway: (Pss, Rss, marginal Pss) KiB and sockets held.

    The marginal figure is the slope between n/4 and n sessions open, which
    no allocator reuse of the warm-up's memory can flatter.
    """
    pid = env.gateway_pid
    Holder(env, "gateway", 50).close()  # warm-up: imports, caches, allocator arenas
    time.sleep(1.0)
    base, base_fds = memory_kib(pid), _open_fds(pid)
    first = max(1, n // 4)
    holders = [Holder(env, "gateway", first)]
    time.sleep(0.5)
    part = memory_kib(pid)
    holders.append(Holder(env, "gateway", n - first))
    time.sleep(1.0)
    full, held = memory_kib(pid), _open_fds(pid) - base_fds
    for h in holders:
        h.close()
    marginal = (full["Pss"] - part["Pss"]) / max(1, n - first)
    return (full["Pss"] - base["Pss"]) / n, (full["Rss"] - base["Rss"]) / n, marginal, held


def openssh_per_session(env: BenchEnv, n: int) -> tuple[float, float, int]:
    """(Pss, Rss, processes) per idle session on the OpenSSH jump host."""
    holder = Holder(env, "openssh", n)
    time.sleep(1.0)
    rss, pss, count = tree_memory_kib(env.jump_pid, include_root=False)
    holder.close()
    wait_for(lambda: env.connections_idle("openssh"), timeout=60)
    return pss / n, rss / n, count


def measure(env: BenchEnv, n: int, n_openssh: int) -> list[Figure]:
    g_pss, g_rss, marginal, sockets = gateway_per_session(env, n)
    o_pss, o_rss, procs = openssh_per_session(env, n_openssh)
    note = (
        f"gateway at {n} sessions ({sockets} sockets held; marginal {marginal:.1f} KiB "
        f"from {n // 4} to {n}), OpenSSH at {n_openssh} ({procs} processes)"
    )
    return [
        Figure("memory per idle session (Pss)", "KiB", g_pss, o_pss, TARGET, note),
        Figure(
            "memory per idle session (Rss)",
            "KiB",
            g_rss,
            o_rss,
            None,
            "Rss counts shared pages once per process; Pss is the fair figure",
        ),
    ]


def main(argv: list[str] | None = None) -> list[Figure]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=2000, help="idle sessions on the gateway")
    ap.add_argument(
        "--openssh-sessions", type=int, default=2000, help="idle sessions on the OpenSSH jump"
    )
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    raise_nofile(max(args.sessions, args.openssh_sessions) * 2 + 256)
    with bench_env(workers=args.workers) as env:
        header("memory per idle session", env)
        figures = measure(env, args.sessions, args.openssh_sessions)
        emit(figures)
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        client_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
