"""``gpuhop run``'s host-side scripts, run by a real ``sh`` on this machine.

These are the pieces that must hold on every host: a fresh directory per run,
the command's exact exit status, the environment, the watchdog that kills the
whole process group when the channel's stdin closes, and the explicit kill.
The full path through a gateway is in tests/integration/test_client_cli.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.errors import HostLost
from client.identity import Paths, Profile
from client.remote import KILL_SCRIPT, SEND_SCRIPT, script_command
from client.run import (
    Runner,
    RunRequest,
    RunSummary,
    _Beats,
    _Job,
    channel_env,
    gateway_refusal,
    job_command,
    send_chunks,
    signal_exit_code,
)
from client.settings import load_settings
from client.sshconn import asyncssh
from client.workdir import Selection, select_files
from tests.conftest import require

RUN_ID = "100-abcd"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    require("setsid")
    path = tmp_path / "home"
    path.mkdir()
    return path


def _env(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "PATH": os.environ["PATH"]}


def _run_dir(home: Path, run_id: str = RUN_ID) -> Path:
    return home / ".cache" / "gpuhop" / "runs" / run_id


def _send(home: Path, selection: Selection, run_id: str = RUN_ID) -> int:
    data = b"".join(send_chunks(RunRequest("h", ("true",), selection)))
    cmd = script_command(SEND_SCRIPT, run_id)
    return subprocess.run(
        ["sh", "-c", cmd], input=data, env=_env(home), capture_output=True, timeout=30
    ).returncode


def _job(
    home: Path, *command: str, env: tuple[tuple[str, str], ...] = ()
) -> subprocess.Popen[bytes]:
    request = RunRequest("h", command, Selection(home, (), "walk"), env=env)
    return subprocess.Popen(
        ["sh", "-c", job_command(RUN_ID, request)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(home),
    )


@pytest.fixture
def sent(home: Path, tmp_path: Path) -> Iterator[Path]:
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.txt").write_text("hi\n")
    assert _send(home, select_files(work)) == 0
    run = _run_dir(home)
    assert sorted(p.name for p in run.iterdir()) == ["job.sh", "work"]
    yield run


def _finish(proc: subprocess.Popen[bytes], timeout: float = 30) -> tuple[int, bytes, bytes]:
    """Say "go" and keep stdin open until the job ends, as the client does."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    status = proc.wait(timeout)  # the outputs here are far below a pipe's buffer
    proc.stdin.close()
    return status, proc.stdout.read(), proc.stderr.read()


@pytest.mark.parametrize(
    ("command", "code"),
    [(("true",), 0), (("sh", "-c", "exit 3"), 3), (("sh", "-c", "kill -9 $$"), 137)],
)
def test_exact_exit_status(home: Path, sent: Path, command: tuple[str, ...], code: int) -> None:
    with _job(home, *command) as proc:
        status, _, err = _finish(proc)
    assert (status, err) == (code, b"")
    assert not sent.exists(), "the run directory is removed when the job ends"


def test_files_env_and_streams(home: Path, sent: Path) -> None:
    script = 'cat hello.txt; echo "$SEED|$GPUHOP_RUN_ID|$ODD" ; echo to-err >&2'
    env = (("SEED", "42"), ("ODD", 'it\'s $HOME "quoted"'))
    with _job(home, "sh", "-c", script, env=env) as proc:
        status, out, err = _finish(proc)
    assert status == 0
    assert out == f'hi\n42|{RUN_ID}|it\'s $HOME "quoted"\n'.encode()
    assert err == b"to-err\n"


def test_no_go_runs_nothing_and_cleans_up(home: Path, sent: Path) -> None:
    with _job(home, "sh", "-c", "touch ran") as proc:
        _, _ = proc.communicate(timeout=30)  # stdin closed without "go"
    assert proc.returncode == 86
    assert not sent.exists()


def _pids(marker: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def _gone(marker: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pids(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _pids(marker)


def _start_sleeper(home: Path, marker: str) -> subprocess.Popen[bytes]:
    proc = _job(home, "sh", "-c", f"{marker} & {marker}; wait")
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 10
    while len(_pids(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_pids(marker)) >= 2, "the job did not start"
    return proc


def test_stdin_eof_kills_the_whole_group(home: Path, sent: Path) -> None:
    require("pgrep")
    marker = f"sleep 600.{os.getpid() % 1000:03d}7"
    with _start_sleeper(home, marker) as proc:
        try:
            assert proc.stdin is not None
            proc.stdin.close()  # what sshd does when the client or its link dies
            assert _gone(marker, 5.0)
            proc.wait(10)
            assert proc.returncode == 128 + signal.SIGTERM
        finally:
            for pid in _pids(marker):
                os.kill(pid, signal.SIGKILL)


def test_kill_script_stops_the_group(home: Path, sent: Path) -> None:
    require("pgrep")
    marker = f"sleep 600.{os.getpid() % 1000:03d}8"
    with _start_sleeper(home, marker) as proc:
        try:
            kill = subprocess.run(
                ["sh", "-c", script_command(KILL_SCRIPT, RUN_ID)], env=_env(home), timeout=10
            )
            assert kill.returncode == 0
            assert _gone(marker, 5.0)
            proc.wait(10)
            assert proc.returncode == 128 + signal.SIGTERM
        finally:
            for pid in _pids(marker):
                os.kill(pid, signal.SIGKILL)


def test_send_refuses_an_existing_run_dir(home: Path, sent: Path, tmp_path: Path) -> None:
    assert _send(home, select_files(tmp_path)) == 86  # same id: never unpack over a run


def test_job_command_is_short_and_ends_with_the_command() -> None:
    request = RunRequest("h", ("python", "train.py"), Selection(Path("."), (), "walk"))
    line = job_command(RUN_ID, request)
    assert line.endswith(" -- python train.py") and len(line) < 300


def test_channel_env_asks_gpus_on_the_job_channel_only() -> None:
    request = RunRequest("h", ("true",), Selection(Path("."), (), "walk"), gpus=2, data="imagenet")
    assert channel_env(request, job=True) == {"GPUHOP_GPUS": "2", "GPUHOP_DATA": "imagenet"}
    assert channel_env(request, job=False) == {"GPUHOP_DATA": "imagenet"}


@pytest.mark.parametrize(
    ("name", "code"), [("KILL", 137), ("SIGTERM", 143), ("INT", 130), ("NOPE", 255)]
)
def test_signal_exit_codes(name: str, code: int) -> None:
    assert signal_exit_code(name) == code


@pytest.mark.parametrize(
    ("status", "stderr", "kind", "older"),
    [
        (
            255,
            "gpuhop: denied: role dev does not allow recorded mode on sg-1\r\n",
            "PolicyDenied",
            False,
        ),
        (255, "gpuhop: denied: unknown host zz\r\n", "HostNotFound", False),
        (1, "gpuhop: unknown host zz\n", "HostNotFound", True),
        (1, "gpuhop: role dev does not allow recorded mode\n", "PolicyDenied", True),
        (255, "\r\ngpuhop: connection to sg-1 lost\r\n", "HostLost", False),
        (255, "gpuhop: session refused: disk full\r\n", "GatewayUnavailable", False),
        (255, "ssh: something of the command's own\n", None, False),
        (1, "gpuhop: a nested gpuhop said this\n", None, False),
        (0, "gpuhop: denied: x\n", None, True),
    ],
)
def test_gateway_refusals(status: int, stderr: str, kind: str | None, older: bool) -> None:
    found = gateway_refusal(status, stderr, "sg-1", older=older)
    assert (type(found).__name__ if found is not None else None) == kind


class _Recorded:
    """An ``Output`` that keeps what it was given."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""

    def stdout(self, data: bytes) -> None:
        self.out += data

    def stderr(self, data: bytes) -> None:
        self.err += data


def _ended(*stderr: bytes, status: int = 255) -> tuple[RunSummary, _Recorded]:
    """A job whose channel got ``stderr`` chunks after "go", then ``status``."""
    out = _Recorded()
    request = RunRequest("sg-1", ("true",), Selection(Path("."), (), "walk"))
    profile = Profile("http://127.0.0.1:1", "rita", "127.0.0.1", 1, "k", "ca")
    runner = Runner(request, profile, Paths(Path(".")), load_settings({}), out)

    async def go() -> RunSummary:
        job = _Job(out, _Beats())
        job.release()
        job.data_received(b"step 1\n", 0)
        for chunk in stderr:
            job.data_received(chunk, asyncssh.EXTENDED_DATA_STDERR)
        job.exit_status_received(status)
        job.connection_lost(None)
        return runner._ended(job)

    return asyncio.run(go()), out


def test_a_host_lost_mid_job_is_said_once_without_a_blank_line() -> None:
    summary, out = _ended(b"\r\ngpuhop: connection to sg-1 lost\r\n")
    assert isinstance(summary.error, HostLost) and not summary.error_shown
    assert str(summary.error) == "connection to sg-1 lost"  # the CLI prints this one line
    assert (out.out, out.err) == (b"step 1\n", b"")


def test_the_gateways_warnings_and_unclaimed_lines_still_show() -> None:
    warning = b"\r\ngpuhop: warning: idle for 10m; the session ends in 5m\r\n"
    summary, out = _ended(warning, b"\r\ngpuhop: a nested gpuhop said this\r\n", status=1)
    assert summary.error is None and summary.exit_code == 1
    assert out.err == (
        b"gpuhop: warning: idle for 10m; the session ends in 5m\n"
        b"gpuhop: a nested gpuhop said this\n"
    )
