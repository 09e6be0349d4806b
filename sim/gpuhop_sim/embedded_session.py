"""Running one SSH session of an ``EmbeddedHost`` as a local process.

Exec requests run ``/bin/sh -c COMMAND`` with stdout and stderr kept apart;
a session that asked for a pty gets a real one (``pty.openpty``), made the
controlling terminal with util-linux ``setsid --ctty`` so ^C and window
changes behave as under sshd. The exit status, or the signal that ended the
process, goes back to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import shutil
import signal
import struct
import termios
from collections.abc import Callable, Mapping

import asyncssh

READ_SIZE = 64 * 1024
PTY_DRAIN_AFTER_EXIT = 1.0  # background jobs may keep the pty open; stop waiting after this


def _set_winsize(fd: int, size: tuple[int, int, int, int]) -> None:
    width, height, pixwidth, pixheight = size
    if width and height:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, pixwidth, pixheight))


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def report_exit(process: asyncssh.SSHServerProcess[bytes], returncode: int) -> None:
    """Send exit-status, or exit-signal for a process a signal ended."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name.removeprefix("SIG")
        except ValueError:
            name = "KILL"
        process.exit_with_signal(name)
    else:
        process.exit(returncode)


async def _copy_stdin(
    process: asyncssh.SSHServerProcess[bytes],
    pid: int,
    write: Callable[[bytes], None],
    drain: Callable[[], object],
    on_resize: Callable[[tuple[int, int, int, int]], None],
) -> None:
    """Client → process; signals, breaks and resizes arrive here as exceptions."""
    while True:
        try:
            chunk = await process.stdin.read(READ_SIZE)
        except asyncssh.TerminalSizeChanged as exc:
            on_resize(exc.term_size)
            continue
        except asyncssh.BreakReceived:
            _signal_group(pid, signal.SIGINT)
            continue
        except asyncssh.SignalReceived as exc:
            sig = getattr(signal, f"SIG{exc.signal}", None)
            if sig is not None:
                _signal_group(pid, sig)
            continue
        if not chunk:
            return
        write(chunk)
        result = drain()
        if asyncio.iscoroutine(result):
            await result


async def run_piped(
    process: asyncssh.SSHServerProcess[bytes],
    argv: list[str],
    env: Mapping[str, str],
    cwd: str,
    started: Callable[[int], None],
) -> int:
    """Run without a pty; returns the process's return code (negative = signal)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    started(proc.pid)
    assert proc.stdin and proc.stdout and proc.stderr
    stdin = proc.stdin

    async def feed() -> None:
        with contextlib.suppress(ConnectionError):
            await _copy_stdin(process, proc.pid, stdin.write, stdin.drain, lambda _: None)
            stdin.close()

    async def copy_out(src: asyncio.StreamReader, dst: asyncssh.SSHWriter[bytes]) -> None:
        while chunk := await src.read(READ_SIZE):
            dst.write(chunk)
            await dst.drain()

    feeder = asyncio.ensure_future(feed())
    try:
        await asyncio.gather(
            copy_out(proc.stdout, process.stdout), copy_out(proc.stderr, process.stderr)
        )
        return await proc.wait()
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        stdin.close()


async def run_in_pty(
    process: asyncssh.SSHServerProcess[bytes],
    argv: list[str],
    env: Mapping[str, str],
    cwd: str,
    started: Callable[[int], None],
) -> int:
    """Run with a pty as stdin/stdout/stderr; returns the return code."""
    loop = asyncio.get_running_loop()
    master, slave = pty.openpty()
    _set_winsize(master, process.get_terminal_size())
    setsid = shutil.which("setsid")
    try:
        proc = await asyncio.create_subprocess_exec(
            *([setsid, "--ctty"] if setsid else []),
            *argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=dict(env),
            cwd=cwd,
            start_new_session=setsid is None,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    started(proc.pid)
    reader = asyncio.StreamReader()
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(master, "rb", buffering=0)
    )
    write_transport, _ = await loop.connect_write_pipe(
        asyncio.Protocol, os.fdopen(os.dup(master), "wb", buffering=0)
    )

    async def copy_out() -> None:
        while True:
            try:
                chunk = await reader.read(READ_SIZE)
            except OSError:  # EIO: every slave descriptor is closed
                return
            if not chunk:
                return
            process.stdout.write(chunk)
            await process.stdout.drain()

    def resize(size: tuple[int, int, int, int]) -> None:
        _set_winsize(master, size)

    feeder = asyncio.ensure_future(
        _copy_stdin(process, proc.pid, write_transport.write, lambda: None, resize)
    )
    output = asyncio.ensure_future(copy_out())
    try:
        returncode = await proc.wait()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(output), PTY_DRAIN_AFTER_EXIT)
        return returncode
    finally:
        for task in (feeder, output):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        read_transport.close()
        write_transport.close()
