"""Playing back a session recording (asciicast v2, see ``recording.py``) in a terminal.

Read line by line, so a long session replays in constant memory. Output events
(``"o"`` text and ``"b"`` ``"o:BASE64"`` bytes) are written, as the exact bytes
the user saw, at their recorded times divided by ``speed``; gaps longer than
``max_idle`` are shortened to it. Input and resize events are skipped: what the
user typed shows in the output already, when the host echoed it.
The clock and sleep are passed in, so tests replay without waiting.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from gateway.errors import StorageError

SESSION_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # as the API's /recordings route
# Terminal escape sequences: CSI, OSC (ended by BEL or ST), nF and other two-byte escapes.
_SEQUENCE: Final = (
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]+[0-~]|\x1b[0-Z\\^-~]"
)
_ESCAPE: Final = re.compile(_SEQUENCE)
# ...and every other control character but newline and tab, including a stray ESC.
_CONTROL: Final = re.compile(_SEQUENCE + r"|[\x00-\x08\x0b-\x1f\x7f]")
_ESC_TAIL: Final = 256  # longest escape sequence held back across an event boundary
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CastHeader:
    width: int
    height: int
    title: str
    timestamp: int


def recording_path(recordings_dir: Path, session_id: str) -> Path:
    """Where the gateway writes ``session_id``'s recording; refuses ids that are not ids."""
    if not SESSION_ID.match(session_id):
        raise StorageError(f"{session_id!r} is not a session id")
    path = recordings_dir / f"{session_id}.cast"
    if not path.is_file():
        raise StorageError(f"{path}: no recording for session {session_id}")
    return path


def read_cast(lines: Iterable[str]) -> tuple[CastHeader, Iterator[tuple[float, bytes]]]:
    """The header and the output events ``(seconds, bytes)`` of an asciicast v2 stream."""
    it = iter(lines)
    try:
        header = json.loads(next(it))
    except (StopIteration, ValueError):
        raise StorageError("not an asciicast recording (bad or missing header line)") from None
    if not isinstance(header, dict) or header.get("version") != 2:
        raise StorageError("not an asciicast v2 recording")

    def events() -> Iterator[tuple[float, bytes]]:
        for n, line in enumerate(it, start=2):
            if not line.strip():
                continue
            try:
                ts, kind, text = json.loads(line)
                ts = float(ts)
            except (ValueError, TypeError):
                # A gateway killed mid-write leaves a torn last line; anything else is damage.
                raise StorageError(f"recording line {n} is not an event") from None
            if not isinstance(text, str):
                continue
            if kind == "o":
                yield ts, text.encode("utf-8", "surrogateescape")
            elif kind == "b" and text.startswith("o:"):
                try:
                    yield ts, base64.b64decode(text[2:], validate=True)
                except binascii.Error:
                    raise StorageError(f"recording line {n} has bad base64") from None

    def number(key: str, default: int) -> int:
        value = header.get(key)
        return value if isinstance(value, int) else default

    title = header.get("title")
    return (
        CastHeader(
            number("width", 80),
            number("height", 24),
            title if isinstance(title, str) else "",
            number("timestamp", 0),
        ),
        events(),
    )


def play(
    events: Iterable[tuple[float, T]],
    write: Callable[[T], None],
    *,
    speed: float = 1.0,
    max_idle: float | None = None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> float:
    """Write each event's text when its (scaled) time comes; return the playback length.

    Times are kept against the start, not summed per event, so slow writes do
    not make playback drift.
    """
    if speed <= 0:
        raise ValueError("speed must be > 0")
    start = clock()
    position = 0.0  # recorded seconds played, after idle gaps are shortened
    last = 0.0
    for ts, text in events:
        gap = max(0.0, ts - last)
        position += gap if max_idle is None else min(gap, max_idle)
        last = max(last, ts)
        wait = start + position / speed - clock()
        if wait > 0:
            sleep(wait)
        write(text)
    return position / speed


class PlainText:
    """Terminal output as plain text: escape sequences and control characters removed.

    Feed it chunks in order; a sequence split between chunks is held back until
    the next one completes it.
    """

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        text = self._held + text
        self._held = ""
        cut = text.rfind("\x1b", max(0, len(text) - _ESC_TAIL))
        if cut >= 0 and not _complete(text[cut:]):
            text, self._held = text[:cut], text[cut:]
        return _CONTROL.sub("", text)

    def end(self) -> str:
        held, self._held = self._held, ""
        return _CONTROL.sub("", held)


def _complete(tail: str) -> bool:
    """Whether ``tail`` (starting at ESC) holds a whole control sequence at its start."""
    match = _ESCAPE.match(tail)
    return match is not None or len(tail) >= _ESC_TAIL
