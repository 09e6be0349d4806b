"""Terminal recordings in asciicast v2, written as they happen, failing closed.

One file per recorded channel: a JSON header line, then one JSON array per
event: ``[elapsed_s, "o", text]`` output, ``"i"`` input, ``"r"`` resize
``"80x24"``, and ``[elapsed_s, "b", "o:BASE64"]`` (or ``"i:BASE64"``) for
bytes that are not UTF-8 text, or whose JSON escaping would cost more than the
file's budget (see ``RATIO``). ``asciinema`` ignores ``"b"`` events; gpuhop's
readers (``replay.py``, the TUI) join both kinds back into the exact byte
stream. A multi-byte character split between chunks is held back (at most 3
bytes) until the next chunk completes it. A chunk that comes within ``MERGE_S``
of the last event (of the same kind, under ``MERGE_BYTES``) joins it: that last
line is rewritten, longer, in place, so output in tiny chunks costs no framing
per chunk (its bytes replay up to ``MERGE_S`` early).

The file is the gate, at every step:

- the header is written and fsynced (file and directory) before the session
  starts, or the session is refused;
- each event is written straight through to the kernel *before* the caller
  forwards the data, so a ``kill -9`` of the gateway keeps every event that any
  user saw, and a failed write (:class:`RecordingError`) means the caller drops
  the data and ends the session;
- the file never grows past ``Limits.max_bytes``, and no write is made while
  the recordings filesystem has less than ``Limits.min_free_bytes`` free.

A failed write is cut back to the last whole event, so the file stays a valid
recording up to the failure.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway.errors import StorageError

RATIO: Final = 1.4
"""Text events may cost at most this many file bytes per recorded byte (plus ``SLACK``);
past it a chunk is written as base64 (4/3), so escape-heavy text cannot blow up the file."""
SLACK: Final = 2048
MERGE_S: Final = 0.02  # a chunk this soon after the last event is joined to it...
MERGE_BYTES: Final = 1024  # ...up to this many bytes an event, so tiny chunks cost no framing
CHECK_BYTES: Final = 256 * 1024  # free space is read again after this many bytes written...
CHECK_S: Final = 1.0  # ...or this many seconds


class RecordingError(StorageError):
    """The recording cannot go on (or start): the session it records must end (or not start)."""


@dataclass(frozen=True, slots=True)
class _Last:
    """The file's last event, kept so that a chunk right after it can join it."""

    kind: str  # the stream: "o" or "i"
    text: bool  # an "o"/"i" text event, else "b" base64
    data: bytes
    offset: int
    elapsed: float
    at: float
    line: bytes


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 1 << 30
    """The most a recording file may hold; at the cap the session ends."""
    min_free_bytes: int = 256 << 20
    """Free space kept on the recordings filesystem (0: none beyond ENOSPC)."""


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on ``directory``'s filesystem (or,
    before it is created, on that of its nearest existing parent)."""
    while not directory.exists() and directory.parent != directory:
        directory = directory.parent
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def check_free(directory: Path, min_free: int) -> None:
    """Raise :class:`RecordingError` when ``directory`` has less than ``min_free`` bytes free."""
    if min_free <= 0:
        return
    try:
        free = free_bytes(directory)
    except OSError as exc:
        raise RecordingError(f"recordings filesystem unreadable: {exc.strerror}") from exc
    if free < min_free:
        raise RecordingError(
            f"recordings filesystem has {mib(free)} free, below its reserve of {mib(min_free)}"
        )


def split_utf8(buf: bytes) -> tuple[str, bytes] | None:
    """``(text, tail)``: ``buf`` as text but for an incomplete last character; None if not UTF-8."""
    try:
        return buf.decode("utf-8"), b""
    except UnicodeDecodeError as exc:
        if (
            exc.end == len(buf)
            and len(buf) - exc.start <= 3
            and exc.reason.startswith("unexpected end")
        ):
            return buf[: exc.start].decode("utf-8"), buf[exc.start :]
        return None


class Recording:
    """An asciicast v2 file being written; every method raises :class:`RecordingError`
    once the recording cannot go on, and the caller must then end the session."""

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        term: str,
        title: str,
        command: str | None = None,
        record_input: bool = False,
        started: float | None = None,
        limits: Limits = Limits(),
    ) -> None:
        self.path = path
        self.record_input = record_input
        self.limits = limits
        self._start = time.monotonic()
        self._held = {"o": b"", "i": b""}
        self._fd: int | None = None
        self._last: _Last | None = None
        self.bytes_written = 0
        self._recorded = 0  # bytes of the session's streams on disk
        self._checked_at = (0, time.monotonic())
        self.failed = ""
        header: dict[str, object] = {
            "version": 2,
            "width": max(1, width),
            "height": max(1, height),
            "timestamp": int(started if started is not None else time.time()),
            "env": {"TERM": term or "dumb", "SHELL": "/bin/sh"},
            "title": title,
        }
        if command:
            header["command"] = command
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordingError(f"cannot create recording {path}: {exc.strerror}") from exc
        check_free(path.parent, limits.min_free_bytes)
        try:
            # O_EXCL: a recording is never overwritten or appended to by another session.
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except OSError as exc:
            raise RecordingError(f"cannot create recording {path}: {exc.strerror}") from exc
        try:
            self._write_at(0, (json.dumps(header, ensure_ascii=False) + "\n").encode("utf-8"))
            assert self._fd is not None
            os.fsync(self._fd)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except (OSError, RecordingError) as exc:
            self.close()
            with contextlib.suppress(OSError):
                path.unlink()
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise RecordingError(f"cannot start recording {path.name}: {reason}") from exc

    # -- the streams --

    def output(self, data: bytes) -> None:
        """Record host output; raises :class:`RecordingError` (then do not forward ``data``)."""
        self._stream("o", data)

    def input(self, data: bytes) -> None:
        if self.record_input:
            self._stream("i", data)

    def resize(self, width: int, height: int) -> None:
        self._event("r", f"{width}x{height}")

    def check_space(self) -> None:
        """Raise :class:`RecordingError` (and stop) if the filesystem fell below its reserve."""
        self._ensure_open()
        try:
            check_free(self.path.parent, self.limits.min_free_bytes)
        except RecordingError as exc:
            self._fail(str(exc))
        self._checked_at = (self.bytes_written, time.monotonic())

    def close(self) -> None:
        """Write any held-back partial character, then close (never raises)."""
        if self._fd is not None and not self.failed:
            for kind, held in self._held.items():
                if held:
                    with contextlib.suppress(RecordingError):
                        self._put(kind, held, text=False)
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- encoding --

    def _stream(self, kind: str, data: bytes) -> None:
        self._ensure_open()
        buf = self._held[kind] + data
        parsed = split_utf8(buf)
        if parsed is not None:
            text, tail = parsed
            if not text:
                self._held[kind] = tail  # at most 3 bytes of one character
                return
            if self._put(kind, buf[: len(buf) - len(tail)], text=True):
                self._held[kind] = tail
                return
        self._put(kind, buf, text=False)
        self._held[kind] = b""

    def _put(self, kind: str, raw: bytes, *, text: bool) -> bool:
        """Write ``raw`` of stream ``kind`` ("o"/"i") as text or base64, joined to the last
        event when it comes soon after it; False when text would break the budget."""
        last, now = self._last, time.monotonic()
        if (
            last is not None
            and last.kind == kind
            and now - last.at <= MERGE_S
            and len(last.data) + len(raw) <= MERGE_BYTES
            and (text or not last.text)  # a rewrite only ever makes the last line longer
        ):
            data, offset, elapsed = last.data + raw, last.offset, last.elapsed
            text = text and last.text  # base64 takes in anything
        else:
            last, data, offset = None, raw, self.bytes_written
            elapsed = round(now - self._start, 6)
        if text:
            event = [elapsed, kind, data.decode("utf-8")]
        else:
            event = [elapsed, "b", kind + ":" + base64.b64encode(data).decode("ascii")]
        line = (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")
        if text and offset + len(line) > RATIO * (self._recorded + len(raw)) + SLACK:
            return False
        # Never shorter: no byte of the line it replaces is left behind.
        assert last is None or len(line) >= len(last.line)
        self._write_at(offset, line, last.line if last is not None else b"")
        self._recorded += len(raw)
        self._last = _Last(kind, text, data, offset, elapsed, now, line)
        return True

    def _event(self, kind: str, text: str) -> None:
        self._ensure_open()
        elapsed = round(time.monotonic() - self._start, 6)
        line = (json.dumps([elapsed, kind, text], ensure_ascii=False) + "\n").encode("utf-8")
        self._write_at(self.bytes_written, line)
        self._last = None

    # -- the file --

    def _ensure_open(self) -> None:
        if self.failed:
            raise RecordingError(self.failed)
        if self._fd is None:
            raise RecordingError("recording closed")

    def _fail(self, reason: str) -> None:
        self.failed = reason
        self.close()
        raise RecordingError(reason)

    def _write_at(self, offset: int, line: bytes, replaces: bytes = b"") -> None:
        """Write ``line`` at ``offset`` (the end, or over the last line ``replaces``)."""
        end = offset + len(line)
        if end > self.limits.max_bytes:
            self._fail(f"recording reached its size cap of {mib(self.limits.max_bytes)}")
        written, at = self._checked_at
        if self.bytes_written - written >= CHECK_BYTES or time.monotonic() - at >= CHECK_S:
            self.check_space()
        fd = self._fd
        assert fd is not None
        view, pos = memoryview(line), offset
        try:
            while view:  # each pass writes at least one byte or raises
                n = os.pwrite(fd, view, pos)
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view, pos = view[n:], pos + n
        except OSError as exc:
            # Put the file back as it was, so it stays a valid recording up to here.
            with contextlib.suppress(OSError):
                os.pwrite(fd, replaces, offset)
                os.ftruncate(fd, offset + len(replaces))
            self._fail(f"recording write failed: {exc.strerror}")
        self.bytes_written = end
