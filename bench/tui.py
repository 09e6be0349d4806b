"""The TUI under load: time to first frame, and CPU with 200 hosts updating at 1 Hz.

The app runs in a child process inside a real terminal (a private tmux server,
80x24) so Textual's real driver writes every frame; without tmux it runs
headless and says so. The gateway is ``FakeGateway.synthetic(200)`` behind an
``httpx.MockTransport``: every poll returns all 200 hosts with new latency,
history and utilisation, so every visible row changes every second. Building
and parsing those responses happens in the same process and is counted.

Figures:
* first frame: from the child's start (before importing Textual) to Textual's
  ``Ready`` (first frame on the terminal); target < 1 s.
* first data: to the first frame with the 200 hosts in the table.
* CPU: ``time.process_time()`` over a window of ``--seconds`` (default 10)
  after a 2 s warm-up, as a share of one core; target < 20 %.

    python bench/tui.py [--hosts 200] [--seconds 10] [--headless]
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # the child's clock starts before any heavy import

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIRST_FRAME_TARGET_S = 1.0
CPU_TARGET = 0.20


def child(out: Path, hosts: int, seconds: float, headless: bool) -> None:
    from textual import events, on

    from client.tui.app import GpuhopApp
    from client.tui.fake import FakeGateway
    from client.tui.messages import HostsLoaded

    fake = FakeGateway.synthetic(hosts)
    result: dict[str, float] = {"imported_s": time.perf_counter() - T0}

    class BenchApp(GpuhopApp):
        @on(events.Ready)
        def _first_frame(self) -> None:
            result.setdefault("first_frame_s", time.perf_counter() - T0)

        @on(HostsLoaded)
        def _data(self, message: HostsLoaded) -> None:
            if "first_data_s" not in result and len(message.hosts) == hosts:
                self.call_after_refresh(self._data_painted)

        def _data_painted(self) -> None:
            result.setdefault("first_data_s", time.perf_counter() - T0)
            self.set_timer(2.0, self._start_window)

        def _start_window(self) -> None:
            self._cpu0, self._wall0 = time.process_time(), time.perf_counter()
            self._polls0 = fake.requests.get("/v1/hosts", 0)
            self.set_timer(seconds, self._end_window)

        def _end_window(self) -> None:
            wall = time.perf_counter() - self._wall0
            result["cpu_s"] = time.process_time() - self._cpu0
            result["window_s"] = wall
            result["polls"] = fake.requests.get("/v1/hosts", 0) - self._polls0
            self.exit()

    app = BenchApp("http://127.0.0.1:8080", "gph_bench", transport=fake.transport(), refresh_s=1.0)
    app.run(headless=headless)
    out.write_text(json.dumps(result))


def run_child(hosts: int, seconds: float, headless: bool) -> tuple[dict[str, float], str]:
    with tempfile.TemporaryDirectory(prefix="gpuhop-bench-tui-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(out)]
        cmd += ["--hosts", str(hosts), "--seconds", str(seconds)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        limit = seconds + 60
        if headless or shutil.which("tmux") is None:
            subprocess.run([*cmd, "--headless"], check=True, timeout=limit, env=env)
            where = "headless (no terminal output)"
        else:
            sock = str(Path(tmp) / "tmux.sock")
            tmux = ["tmux", "-S", sock]
            env_args = ["-e", f"PYTHONPATH={REPO}", "-e", "TERM=xterm-256color"]
            subprocess.run(
                [*tmux, "-f", "/dev/null", "new-session", "-d", "-x", "80", "-y", "24",
                 *env_args, *cmd],
                check=True, timeout=10, cwd=REPO,
            )  # fmt: skip
            deadline = time.monotonic() + limit
            try:
                while not out.exists() and time.monotonic() < deadline:
                    time.sleep(0.2)
            finally:
                subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=10)
            where = "tmux 80x24, xterm-256color"
        if not out.exists():
            raise SystemExit("the TUI did not report (timed out)")
        return json.loads(out.read_text()), where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--headless", action="store_true")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.hosts, args.seconds, args.headless)
        return 0
    r, where = run_child(args.hosts, args.seconds, args.headless)
    cpu = r["cpu_s"] / r["window_s"]
    print(f"gpuhop TUI bench: {args.hosts} hosts, polled at 1 Hz, {where}")
    print(f"  imports (textual, app)   {r['imported_s']:.3f} s")
    print(
        f"  first frame              {r['first_frame_s']:.3f} s "
        f"(target < {FIRST_FRAME_TARGET_S:.0f} s: {r['first_frame_s'] / FIRST_FRAME_TARGET_S:.2f}x)"
    )
    print(f"  first frame with data    {r['first_data_s']:.3f} s")
    print(
        f"  CPU                      {cpu * 100:.1f}% of one core over {r['window_s']:.1f} s, "
        f"{r['polls']:.0f} polls (target < {CPU_TARGET * 100:.0f}%: {cpu / CPU_TARGET:.2f}x)"
    )
    ok = r["first_frame_s"] < FIRST_FRAME_TARGET_S and cpu < CPU_TARGET
    print("  within targets" if ok else "  OVER TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
