"""Terminal recordings in asciicast v2, written as they happen.

One file per recorded channel: a JSON header line, then one JSON array per
event (``[elapsed_s, "o", text]`` output, ``"i"`` input, ``"r"`` resize
``"80x24"``). Each event is written straight through to the kernel, so a
``kill -9`` of the gateway keeps every event before it, and ``asciinema play``
replays the file. Creating the file is the gate: a recording that cannot be
created refuses the session (fail closed).
"""

from __future__ import annotations

import codecs
import json
import os
import time
from pathlib import Path

from gateway.errors import StorageError


class Recording:
    """An asciicast v2 file being written."""

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
    ) -> None:
        self.path = path
        self.record_input = record_input
        self._start = time.monotonic()
        self._decoders = {
            kind: codecs.getincrementaldecoder("utf-8")(errors="replace") for kind in "oi"
        }
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
            # O_EXCL: a recording is never overwritten or appended to by another session.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except OSError as exc:
            raise StorageError(f"cannot create recording {path}: {exc.strerror}") from exc
        self._fd: int | None = fd
        self.bytes_written = 0
        self.failed = ""
        self._write(json.dumps(header, ensure_ascii=False) + "\n")

    def _write(self, line: str) -> None:
        if self._fd is None:
            return
        data = line.encode("utf-8")
        try:
            os.write(self._fd, data)
        except OSError as exc:
            # A full disk mid-session: keep what is on disk, note it, stop writing.
            self.failed = f"recording stopped: {exc.strerror}"
            self.close()
            return
        self.bytes_written += len(data)

    def _event(self, kind: str, text: str) -> None:
        elapsed = round(time.monotonic() - self._start, 6)
        self._write(json.dumps([elapsed, kind, text], ensure_ascii=False) + "\n")

    def output(self, data: bytes) -> None:
        text = self._decoders["o"].decode(data)
        if text:
            self._event("o", text)

    def input(self, data: bytes) -> None:
        if self.record_input:
            text = self._decoders["i"].decode(data)
            if text:
                self._event("i", text)

    def resize(self, width: int, height: int) -> None:
        self._event("r", f"{width}x{height}")

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
