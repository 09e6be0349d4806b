"""A download from a far host (120 ms away): recorded mode vs OpenSSH ProxyJump.

The target sshd sits behind a userspace delay proxy (``gpuhop_sim.delayproxy``)
adding 120 ms of round trip; the gateway's inventory and the reference jump
host both dial the proxy, so they reach the same target through the same
proxy. The client runs ``ssh -J gwr|ojump root@sg-1 'head -c SIZE /dev/zero'``
with stdout read and thrown away, timed from the first byte to the last (the
set-up over 120 ms is not part of a rate; the note gives whole-command times).

OpenSSH's jump cannot beat the inner session's channel window, which the
client sets to 2 MiB end to end: about 2 MiB per 120 ms, ~17 MB/s. In recorded
mode the window that spans the 120 ms is the gateway's own, on its connection
to the host, sized from the round trip it measured when it connected
(``gateway.adapters.hosts.upstream.window_for_rtt``); the client's 2 MiB only spans
loopback.

Recorded mode records this exec's output: asciicast v2, where each NUL byte
becomes ``\\u0000``, about 1.6 GB of recording per 256 MiB. By default each run's
recording is deleted once its session has ended (see ``Downloads._recorded``);
``--keep-recordings`` keeps them, which shows the disk's pace instead.

The proxy itself moves at most ``max_in_flight`` bytes per direction per half
round trip per connection (default 4 MiB: ~70 MB/s at 120 ms). That would cap
the gateway, not OpenSSH, so this bench raises it (``--proxy-in-flight``,
default 64 MiB) and says so in its output.

    python bench/far_region.py [--size 256M] [--rounds 3] [--rtt 120]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import socket
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from typing import cast

from _harness import (
    MIB,
    REC_USER,
    VIAS,
    BenchEnv,
    Figure,
    Target,
    bench_env,
    emit,
    header,
    interleaved,
    wait_for,
    wait_quiet,
)
from _harness import median as med
from jump_throughput import CHUNK, _big_pipe, parse_size

from gpuhop_sim.delayproxy import MAX_IN_FLIGHT, ThreadedDelayProxy

TARGET = Target("ratio", ">=", 2.0)


@contextlib.contextmanager
def far_env(rtt_ms: float, max_in_flight: int) -> Iterator[BenchEnv]:
    proxies: list[ThreadedDelayProxy] = []

    def via_proxy(port: int) -> int:
        p = ThreadedDelayProxy("127.0.0.1", port, rtt_ms, max_in_flight=max_in_flight)
        proxies.append(p)
        return p.start().port

    try:
        with bench_env(target_via=via_proxy) as env:
            try:
                yield env
            finally:  # before the gateway and sshd go: no EOF left to forward to a dead peer
                for p in proxies:
                    p.stop()
    finally:
        for p in proxies:
            p.stop()  # again, if bench_env failed after starting it (stop is idempotent)


class Downloads:
    """Runs the download either way; keeps whole-command times and recording sizes."""

    def __init__(self, env: BenchEnv, size: int, keep_recordings: bool) -> None:
        self.env, self.size, self.keep = env, size, keep_recordings
        self.totals: dict[str, list[float]] = {v: [] for v in VIAS}
        self.recorded: list[int] = []

    def run(self, via: str) -> float:
        """Seconds from the first byte to the last of ``size`` bytes through ``via``."""
        env, size = self.env, self.size
        ends = len(self._ends())
        cmd = env.rec_jump_cmd(via, f"head -c {size} /dev/zero")
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        reader = cast(io.RawIOBase, proc.stdout)
        _big_pipe(reader.fileno())
        view = memoryview(bytearray(CHUNK))
        got, first = 0, 0.0
        deadline = time.monotonic() + 900
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
            raise RuntimeError(f"{via}: rc={proc.returncode} got {got}/{size}: {err!r}")
        self.totals[via].append(time.monotonic() - start)
        if via == "gateway":
            self._recorded(ends)
        return end - first

    def _ends(self) -> list[dict[str, object]]:
        return [e for e in self.env.stack.audit_events("session.end") if e.get("user") == REC_USER]

    def _recorded(self, ends_before: int) -> None:
        """Note the session's recording size; drop finished recordings unless kept.

        Each run writes ~6 bytes of asciicast per byte of NUL output. Kept, they
        pile up as dirty page cache, and once the kernel's dirty limit is reached
        the gateway's writes go at the disk's pace, run after run; dropped, each
        run is a download on a gateway that is not already writing back
        gigabytes (the README has both).
        """
        if not wait_for(lambda: len(self._ends()) > ends_before, 10):
            raise RuntimeError("gateway: no session.end audit event after the download")
        self.recorded.append(int(str(self._ends()[-1].get("recording_bytes") or 0)))
        if not self.keep:
            for cast_file in (self.env.stack.root / "recordings").glob("*.cast"):
                cast_file.unlink(missing_ok=True)


def measure_rtt(env: BenchEnv) -> float:
    """One round trip through the proxy, timed at the SSH version exchange: sshd sends
    its KEXINIT once it has read the client's version line."""
    with socket.create_connection(("127.0.0.1", env.dial_port), timeout=10) as s:
        s.settimeout(10)
        banner = b""
        while not banner.endswith(b"\n") and len(banner) < 256:
            chunk = s.recv(1)
            if not chunk:
                break
            banner += chunk
        start = time.monotonic()
        s.sendall(b"SSH-2.0-gpuhop_bench_probe\r\n")
        s.recv(64)
        rtt = time.monotonic() - start
        # Close in order (read to sshd's EOF): closing with unread bytes would reset
        # the proxy's socket while it still has EOF to forward.
        s.shutdown(socket.SHUT_WR)
        for _ in range(1000):
            if not s.recv(65536):
                break
        return rtt


def measure(
    env: BenchEnv, size: int, rounds: int, in_flight: int, keep_recordings: bool = False
) -> list[Figure]:
    runner = Downloads(env, size, keep_recordings)
    # The warm-up round also makes the gateway's connection to the host, which
    # later sessions reuse (its window was sized then).
    runs = {v: partial(runner.run, v) for v in VIAS}
    secs = interleaved(rounds, runs, warmup=1)
    mbps = {v: size / med(secs[v]) / 1e6 for v in VIAS}
    rates = ", ".join(f"{v} " + "/".join(f"{size / s / 1e6:.1f}" for s in secs[v]) for v in VIAS)
    whole = ", ".join(f"{v} {med(runner.totals[v][1:]):.1f} s" for v in VIAS)
    kept = "kept" if keep_recordings else "deleted after each run"
    return [
        Figure(
            f"far region download {size / MIB:g} MiB",
            "MB/s",
            mbps["gateway"],
            mbps["openssh"],
            TARGET,
            f"median of {rounds}; runs {rates} MB/s; whole command {whole}; "
            f"proxy max_in_flight {in_flight / MIB:g} MiB; "
            f"asciicast {med(runner.recorded) / 1e9:.2f} GB per run, {kept}",
        )
    ]


def main(argv: list[str] | None = None) -> list[Figure]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256M", help="bytes to download (e.g. 64M, 256M)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each, interleaved")
    ap.add_argument("--rtt", type=float, default=120.0, help="round trip the proxy adds, ms")
    ap.add_argument(
        "--proxy-in-flight",
        default="64M",
        help=f"proxy's max_in_flight per direction (its default: {MAX_IN_FLIGHT // MIB} MiB)",
    )
    ap.add_argument(
        "--keep-recordings",
        action="store_true",
        help="keep each run's recording (they fill the page cache; see Downloads._recorded)",
    )
    ap.add_argument("--wait-quiet", type=float, default=0.0, help="wait up to N s for idle CPUs")
    args = ap.parse_args(argv)
    if args.wait_quiet > 0:
        busy = wait_quiet(min(args.wait_quiet, 3600.0))
        print(f"# CPUs {busy * 100:.0f}% busy before the bench starts", flush=True)
    size = parse_size(args.size)
    in_flight = parse_size(args.proxy_in_flight)
    if not 0 < size <= 4 * 1024 * MIB:
        ap.error("--size must be between 1 byte and 4 GiB")
    with far_env(args.rtt, in_flight) as env:
        header(f"recorded mode: far region ({args.rtt:g} ms round trip)", env)
        rtt = measure_rtt(env)
        print(
            f"# delay proxy :{env.dial_port} -> sshd :{env.target.port}; round trip "
            f"{rtt * 1000:.0f} ms measured; max_in_flight {in_flight / MIB:g} MiB per direction",
            flush=True,
        )
        figures = measure(env, size, max(1, min(args.rounds, 20)), in_flight, args.keep_recordings)
        emit(figures)
    return figures


if __name__ == "__main__":
    main()
