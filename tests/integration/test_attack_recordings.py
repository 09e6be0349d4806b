"""Attacks on recorded sessions' recordings, with real OpenSSH clients and a real full disk.

A user who can make a session print can try to fill the recordings filesystem,
or to have work run unrecorded once it is full. Here the recordings directory is
a small real tmpfs (mounting one needs root), the gateway a real subprocess, and
the client OpenSSH ``ssh``: new sessions must be refused, running ones ended,
every byte the user saw must be in the recording (and come back exactly), and
the recording must stay compact for any bytes.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.tui.cast import output_bytes, parse_cast
from tests.conftest import missing_peer
from tests.integration.conftest import build_stack
from tests.integration.gwstack import GatewayStack, read_until

pytestmark = pytest.mark.openssh

MIB = 1 << 20


@contextmanager
def recording_stack(
    root: Path, *, tmpfs_mib: int = 0, max_bytes: int = 1 << 30, reserve: int = 0
) -> Iterator[GatewayStack]:
    """A gateway whose recordings directory is (optionally) a tmpfs of ``tmpfs_mib`` MiB."""
    extra = f"recording_max_bytes = {max_bytes}\nrecordings_min_free_bytes = {reserve}"
    stack = build_stack(root, extra_gateway=extra)
    recordings = root / "recordings"
    recordings.mkdir()
    mounted = False
    try:
        if tmpfs_mib:
            if os.geteuid() != 0:
                missing_peer("a real full filesystem needs root (to mount a small tmpfs)")
            opts = f"size={tmpfs_mib}m"
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(recordings)], check=True
            )
            mounted = True
        stack.start_gateway()
        yield stack
    finally:
        stack.close()
        if mounted:
            subprocess.run(["umount", "-l", str(recordings)], check=False)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill(directory: Path, leave: int) -> None:
    """Fill ``directory``'s filesystem until at most ``leave`` bytes are free (0: ENOSPC)."""
    chunk = b"\0" * (256 * 1024)
    with (directory / "filler.bin").open("ab", buffering=0) as f:
        for _ in range(100_000):  # bounded: the tmpfs is a few MiB
            room = _free(directory) - leave
            if room <= 0:
                break
            try:
                f.write(chunk[: min(len(chunk), room)] if leave else chunk)
            except OSError:  # ENOSPC: full
                break
    assert _free(directory) <= max(leave, 0) + 4096


def _ssh(stack: GatewayStack, command: str) -> list[str]:
    rita = stack.users["rita"]
    return ["ssh", "-F", str(stack.ssh_config(rita)), "-T", "rita+sg-1@gw", command]


def _end_of(stack: GatewayStack, command: str) -> dict[str, Any]:
    ends = stack.wait_audit_events("session.end", lambda e: e.get("command") == command)
    assert ends, stack.log_tail()
    return ends[-1]


def _replayed(stack: GatewayStack, session_id: str) -> bytes:
    """The output as the admin command ``gpuhop-gateway audit replay --cat`` gives it back."""
    cmd = [sys.executable, "-m", "gateway.cli", "audit", "replay", session_id]
    cmd += ["--recordings-dir", str(stack.root / "recordings"), "--cat"]
    done = subprocess.run(cmd, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _logins(stack: GatewayStack) -> int:
    return stack.hosts["sg-1"].log_path.read_text().count('ID "gpuhop:rita:')


@pytest.mark.parametrize(
    ("reserve", "why"), [(4 * MIB, b"below its reserve"), (0, b"No space left on device")]
)
def test_a_full_recordings_filesystem_refuses_new_sessions(
    tmp_path: Path, reserve: int, why: bytes
) -> None:
    with recording_stack(tmp_path, tmpfs_mib=16, reserve=reserve) as stack:
        recordings = stack.root / "recordings"
        _fill(recordings, reserve // 4)
        before = _logins(stack)
        result = stack.run(_ssh(stack, "echo should-not-run"))
        assert result.returncode == 255
        assert b"should-not-run" not in result.stdout
        line = result.stderr.strip()
        assert line.startswith(b"gpuhop: ") and b"\n" not in line, result.stderr
        assert b"recording" in line and why in line, line
        assert _logins(stack) == before  # nothing ran on the host
        assert [p.name for p in recordings.iterdir()] == ["filler.bin"]  # no 0-byte recording
        kind = "channel.deny" if reserve else "session.end"
        audited = stack.wait_audit_events(kind, lambda e: why.decode() in str(e))
        assert audited, stack.audit_events()


def test_a_running_session_ends_when_the_recordings_filesystem_fills(tmp_path: Path) -> None:
    command = "echo started; sleep 5; echo after-fill"
    with recording_stack(tmp_path, tmpfs_mib=16, reserve=4 * MIB) as stack:
        proc = subprocess.Popen(
            _ssh(stack, command), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"started\n"
            _fill(stack.root / "recordings", MIB)  # someone else fills the disk
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 255
        assert b"after-fill" not in out
        assert b"gpuhop: session ended: recording stopped" in err and b"reserve" in err, err
        end = _end_of(stack, command)
        assert "reserve" in end["error"] and "reserve" in end["recording_error"], end
        assert end["exit_status"] is None


@pytest.mark.parametrize("reserve", [4 * MIB, 0])
def test_a_session_that_fills_the_disk_with_its_own_output_ends_recorded(
    tmp_path: Path, reserve: int
) -> None:
    command = "head -c 64M /dev/urandom"
    with recording_stack(tmp_path, tmpfs_mib=16, reserve=reserve) as stack:
        result = stack.run(_ssh(stack, command), timeout=60)
        assert result.returncode == 255
        assert 0 < len(result.stdout) < 16 * MIB
        assert b"gpuhop: session ended: recording stopped" in result.stderr, result.stderr
        end = _end_of(stack, command)
        assert end["error"].startswith("recording stopped"), end
        assert ("reserve" if reserve else "No space left") in end["recording_error"], end
        if reserve:
            assert _free(stack.root / "recordings") >= reserve - MIB
        # Every byte the user saw was recorded first, and the recording is whole.
        assert _replayed(stack, end["session_id"]) == result.stdout


def test_output_past_the_size_cap_ends_the_session(tmp_path: Path) -> None:
    cap = MIB
    command = "seq 1 2000000"  # 14.9 MB of text
    with recording_stack(tmp_path, max_bytes=cap) as stack:
        result = stack.run(_ssh(stack, command), timeout=60)
        assert result.returncode == 255
        assert b"gpuhop: session ended: recording stopped" in result.stderr
        assert b"size cap of 1.0 MiB" in result.stderr, result.stderr
        end = _end_of(stack, command)
        assert "size cap" in end["error"] and end["recording_bytes"] <= cap, end
        path = stack.root / "recordings" / end["recording"]
        assert path.stat().st_size == end["recording_bytes"] <= cap
        assert 0 < len(result.stdout) < cap
        assert _replayed(stack, end["session_id"]) == result.stdout


def _api_recording(stack: GatewayStack, session_id: str) -> str:
    cmd = [sys.executable, "-m", "gateway.cli", "token", "create", "--config", str(stack.config)]
    cmd += ["--user", "rita", "--scope", "user"]
    token = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    response = httpx.get(
        f"http://127.0.0.1:{stack.api_port}/v1/recordings/{session_id}",
        headers={"Authorization": f"Bearer {token.stdout.strip()}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.text


@pytest.mark.parametrize(
    ("command", "size", "ratio"),
    [
        ("head -c 4194304 /dev/urandom", 4 * MIB, 1.5),
        ("seq 1 600000", 4_088_895, 1.2),
        # Escape sequences written 3 bytes at a time: JSON alone would cost 2.7x.
        ("i=0; while [ $i -lt 40000 ]; do printf '\\033[m'; i=$((i+1)); done", 120_000, 1.5),
    ],
    ids=["random-bytes", "plain-text", "escapes-in-tiny-chunks"],
)
def test_any_bytes_are_recorded_compactly_and_replayed_exactly(
    tmp_path: Path, command: str, size: int, ratio: float
) -> None:
    with recording_stack(tmp_path) as stack:
        result = stack.run(_ssh(stack, command), timeout=60)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout) == size
        end = _end_of(stack, command)
        path = stack.root / "recordings" / end["recording"]
        assert path.stat().st_size <= ratio * size, path.stat().st_size / size
        assert _replayed(stack, end["session_id"]) == result.stdout
        served = _api_recording(stack, end["session_id"])
        assert output_bytes(served) == result.stdout  # the API and the TUI's reader
        if ratio == 1.2:
            assert "".join(t for _, t in parse_cast(served).events).encode() == result.stdout


def test_a_recording_with_binary_output_still_plays_in_asciinema(tmp_path: Path) -> None:
    if not os.path.exists("/usr/bin/asciinema"):
        missing_peer("asciinema is not installed")
    command = "echo before-bin; sleep 0.3; head -c 3000 /dev/urandom; sleep 0.3; echo after-bin"
    with recording_stack(tmp_path) as stack:
        result = stack.run(_ssh(stack, command), timeout=60)
        assert result.returncode == 0, result.stderr
        end = _end_of(stack, command)
        cast = stack.root / "recordings" / end["recording"]
        kinds = [json.loads(line)[1] for line in cast.read_text().splitlines()[1:]]
        assert "b" in kinds and "o" in kinds, kinds
        assert _replayed(stack, end["session_id"]) == result.stdout
        for how in (["cat"], ["play", "--speed", "10"]):
            # asciinema wants a controlling terminal even to print a recording.
            child, fd = pty.fork()
            if child == 0:
                os.execvp("asciinema", ["asciinema", *how, str(cast)])
            try:
                played = read_until(fd, b"\x00", timeout=20)
                _, status = os.waitpid(child, 0)
            finally:
                os.close(fd)
            assert os.waitstatus_to_exitcode(status) == 0, (how, played)
            assert b"before-bin" in played and b"after-bin" in played, (how, played)


def test_an_interactive_shell_ends_when_the_recordings_filesystem_fills(tmp_path: Path) -> None:
    with recording_stack(tmp_path, tmpfs_mib=16, reserve=4 * MIB) as stack:
        rita = stack.users["rita"]
        cmd = ["ssh", "-F", str(stack.ssh_config(rita)), "-tt", "rita+sg-1@gw"]
        child, fd = pty.fork()
        if child == 0:
            os.execvp(cmd[0], cmd)
        try:
            assert b"# " in read_until(fd, b"# ")
            _fill(stack.root / "recordings", MIB)
            os.write(fd, b"echo typed-$((40+2))\n")
            seen = read_until(fd, b"reserve", timeout=15)
            _, status = os.waitpid(child, 0)
        finally:
            os.close(fd)
        assert b"gpuhop: session ended: recording stopped" in seen, seen
        assert os.waitstatus_to_exitcode(status) == 255
        end = stack.wait_audit_events("session.end", lambda e: e["pty"] and e["user"] == "rita")
        assert end and "reserve" in end[-1]["recording_error"], end
        # What the shell showed before the end (free space is read at most 1 s apart) is recorded.
        shown = seen.split(b"\r\ngpuhop: session ended")[0]
        recorded = _replayed(stack, end[-1]["session_id"])
        assert recorded.endswith(shown.split(b"\n")[-1]), (recorded[-200:], shown[-200:])
        if b"typed-42" in shown:
            assert b"typed-42" in recorded
