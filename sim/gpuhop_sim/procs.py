"""Finding and ending every process a simulated host started (Linux /proc).

sshd forks each connection into its own session, and a session may leave
background jobs behind, so neither the process group nor the parent chain
alone finds them all. A process belongs to a host if it descends from the
host's server process or carries the host's marker variable in its
environment (sessions inherit it even after they detach).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

_PROC = Path("/proc")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, process group) of a live, non-zombie process."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[2])


def _pids() -> list[int]:
    return [int(p.name) for p in _PROC.iterdir() if p.name.isdigit()]


def descendants(root: int) -> set[int]:
    """Live processes below ``root`` or in its process group (``root`` excluded)."""
    parent: dict[int, int] = {}
    found: set[int] = set()
    for pid in _pids():
        st = _stat(pid)
        if st is not None:
            parent[pid] = st[0]
            if st[1] == root and pid != root:
                found.add(pid)
    for pid in parent:
        p = pid
        for _ in range(64):  # bounded walk up the tree
            p = parent.get(p, 0)
            if p in (0, 1):
                break
            if p == root or p in found:
                found.add(pid)
                break
    return found


def with_env(key: str, value: str) -> set[int]:
    """Live processes whose environment has ``key=value`` (needs the right to read it)."""
    marker = f"{key}={value}".encode()
    found: set[int] = set()
    for pid in _pids():
        if pid == os.getpid():
            continue
        try:
            environ = (_PROC / str(pid) / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and _stat(pid) is not None:
            found.add(pid)
    return found


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def freeze_and_kill(collect: Callable[[], set[int]], rounds: int = 10) -> int:
    """SIGSTOP everything ``collect`` finds, again until nothing new appears, then SIGKILL.

    Stopping first means no process forks a new one while we look; returns how
    many processes were killed.
    """
    stopped: set[int] = set()
    for _ in range(rounds):
        new = collect() - stopped
        if not new:
            break
        _signal(new, signal.SIGSTOP)
        stopped |= new
    _signal(stopped, signal.SIGKILL)
    return len(stopped)
