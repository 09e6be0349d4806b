"""The real ``gpuhop`` TUI in a real terminal (tmux) against ``gpuhop demo``.

Open the app, see the hosts with their latency, press Enter on one, type in
the remote shell, exit, and read the session's cost in the summary: the
app suspends, OpenSSH owns the terminal, and the app comes back.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest

from tests.conftest import require
from tests.tui.stack import repo_root

pytestmark = [pytest.mark.openssh, pytest.mark.slow]

WIDTH, HEIGHT = 100, 30


def gpuhop_command() -> list[str]:
    """``gpuhop`` itself once the CLI opens the TUI with no arguments, else the module."""
    from client import cli

    # list_commands: the group's subcommands are lazy, not all in ``commands`` until used.
    if "tui" in cli.main.list_commands(click.Context(cli.main)):
        return [sys.executable, "-m", "client.cli"]
    return [sys.executable, "-m", "client.tui"]


class Tmux:
    """A private tmux server (own socket) with one pane running ``command``."""

    def __init__(self, socket: Path, command: list[str], env: dict[str, str]) -> None:
        self.base = ["tmux", "-S", str(socket)]
        env_args = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
        subprocess.run(
            [*self.base, "-f", "/dev/null", "new-session", "-d", "-s", "tui",
             "-x", str(WIDTH), "-y", str(HEIGHT), *env_args, *command],
            check=True, timeout=10, cwd=repo_root(),
        )  # fmt: skip
        subprocess.run([*self.base, "set", "-g", "remain-on-exit", "on"], check=True, timeout=10)

    def screen(self) -> str:
        out = subprocess.run(
            [*self.base, "capture-pane", "-p", "-t", "tui"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return out.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "tui", *keys], check=True, timeout=10)

    def wait(self, predicate: Callable[[str], object], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"{what}: not on screen within {timeout}s:\n{text}")

    def dead(self) -> bool:
        out = subprocess.run(
            [*self.base, "display-message", "-p", "-t", "tui", "#{pane_dead}"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return out.stdout.strip() == "1"

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[dict[str, str]]:
    require("ssh")
    require("sshd")
    state = tmp_path / "demo"
    cli = [sys.executable, "-m", "client.cli", "demo"]
    subprocess.run([*cli, "--detach", "--state-dir", str(state)], check=True, timeout=120,
                   capture_output=True)  # fmt: skip
    info = json.loads((state / "demo.json").read_text())
    try:
        yield info
    finally:
        subprocess.run([*cli, "stop", "--state-dir", str(state)], timeout=60, capture_output=True)
        pid = int(info.get("pid", 0))
        if pid > 0:  # never leave a demo behind holding the next test's ports
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("via", ["gpuhop-ssh", "ssh-config"])
def test_open_a_shell_from_the_tui_and_see_its_cost(
    demo: dict[str, str], tmp_path: Path, via: str
) -> None:
    """``gpuhop-ssh``: the shell is ``gpuhop ssh HOST`` (certificate from the API, ProxyJump);
    ``ssh-config``: plain ``ssh -F DIR/ssh_config`` with the demo's config."""
    require("tmux")
    env = {
        "GPUHOP_GATEWAY": demo["api_url"],
        "GPUHOP_TOKEN": demo["user_token"],
        "GPUHOP_DATA_DIR": str(tmp_path / "data"),
        "TERM": "xterm-256color",
    }
    if via == "ssh-config":
        env["GPUHOP_SSH_CONFIG"] = demo["ssh_config"]
    tmux = Tmux(tmp_path / "tmux.sock", gpuhop_command(), env)
    try:
        # the hosts, each with an end-to-end latency, lowest first
        row = re.compile(r"^ ●\s+\w+\s+(\S+-1)\s.*\s(\d+(?:\.\d)?) ms\s", re.MULTILINE)
        screen = tmux.wait(lambda s: len(row.findall(s)) == 3, 30, "three hosts with latency")
        rows = row.findall(screen)
        assert [name for name, _ in rows] == ["sg-a100-1", "my-h100-1", "ae-h200-1"], screen
        # end to end = the demo's injected delay (35/45/120 ms) + loopback + our own RTT
        for (_, ms), injected in zip(rows, (35, 45, 120), strict=True):
            assert injected <= float(ms) < injected + 60, screen

        tmux.keys("Enter")  # a shell on sg-a100-1, through the gateway, in this terminal
        # The line wraps at the pane's width (mid-word) when the interpreter's path is long.
        tmux.wait(
            lambda s: "exittheshelltocomeback" in "".join(s.split()),
            20,
            "the app steps aside",
        )
        time.sleep(1.5)  # let the remote shell print its prompt
        tmux.keys("echo hello-$((40+2))-tui", "Enter")
        tmux.wait(lambda s: "hello-42-tui" in s, 20, "the remote shell's output")
        tmux.keys("exit", "Enter")

        summary = tmux.wait(lambda s: "Session on sg-a100-1 ended" in s and "Cost" in s, 30,
                            "the session summary")  # fmt: skip
        cost = re.search(r"Cost\s+\$(\d+\.\d+)", summary)
        took = re.search(r"Duration\s+(\d+\.\d) s", summary)
        assert cost is not None and took is not None, summary
        # one leased GPU at the demo's $2.10/GPU-hour (egress of a few KB rounds away)
        expected = 2.10 * float(took.group(1)) / 3600
        assert abs(float(cost.group(1)) - expected) <= 0.2 * expected + 0.0001, summary
        assert re.search(r"GPUs\s+1\b", summary), summary
        assert re.search(r"Exit\s+0\b", summary), summary

        tmux.keys("Enter")  # close the summary
        tmux.wait(lambda s: "Session on" not in s and "sg-a100-1" in s, 10, "back to hosts")
        tmux.keys("q")
        deadline = time.monotonic() + 15
        while not tmux.dead() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert tmux.dead(), tmux.screen()
    finally:
        tmux.close()
