"""Replaying asciicast v2 recordings through pyte, a terminal emulator in pure Python.

The gateway records each interactive session as asciicast v2: a JSON header
line, then ``[seconds, "o", text]`` output events, and ``[seconds, "b", "o:BASE64"]``
for output bytes that are not text (``asciinema`` skips those; here they are joined
back into the exact byte stream, see ``output_bytes``). ``Player`` feeds those
events to a ``pyte.Screen`` as playback time advances, so a widget only has to
draw ``player.screen``. Nothing here does I/O or reads a clock: the replay
screen's timer passes the elapsed real time to ``advance``.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pyte

from client.errors import ClientError

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
MAX_SIZE = 500  # columns or rows; a header claiming more is not a real terminal


@dataclass(frozen=True)
class Cast:
    width: int
    height: int
    title: str
    events: tuple[tuple[float, str], ...]
    """Output events ``(time, text)``, times non-decreasing, idle gaps capped."""

    @property
    def duration(self) -> float:
        return self.events[-1][0] if self.events else 0.0


def parse_cast(text: str, *, idle_limit: float = 2.0) -> Cast:
    """A recording from asciicast v2 text; gaps longer than the header's
    ``idle_time_limit`` (or ``idle_limit``) are shortened, as ``asciinema play`` does."""
    header, lines = _header(text)
    width = _size(header.get("width"), 80)
    height = _size(header.get("height"), 24)
    limit = header.get("idle_time_limit")
    cap = float(limit) if isinstance(limit, int | float) and limit > 0 else idle_limit
    events: list[tuple[float, str]] = []
    last_raw = 0.0
    clock = 0.0
    # Decoded as one stream: a character split between two events comes out whole.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for ts, data in _output(lines):
        clock += min(max(0.0, ts - last_raw), cap)
        last_raw = max(last_raw, ts)
        if chunk := decoder.decode(data):
            events.append((clock, chunk))
    if tail := decoder.decode(b"", final=True):
        events.append((clock, tail))
    title = header.get("title")
    return Cast(width, height, title if isinstance(title, str) else "", tuple(events))


def output_bytes(text: str) -> bytes:
    """The exact bytes the session's user saw, from the recording's text."""
    _, lines = _header(text)
    return b"".join(data for _, data in _output(lines))


def _header(text: str) -> tuple[dict[str, object], list[str]]:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ClientError("empty recording")
    try:
        header = json.loads(lines[0])
    except ValueError:
        raise ClientError("not an asciicast recording (bad header line)") from None
    if not isinstance(header, dict) or header.get("version") != 2:
        raise ClientError("not an asciicast v2 recording")
    return header, lines


def _output(lines: list[str]) -> Iterator[tuple[float, bytes]]:
    """Output events ``(recorded seconds, bytes)``: ``"o"`` text and ``"b"`` base64 bytes."""
    for n, line in enumerate(lines[1:], start=2):
        try:
            ts, kind, data = json.loads(line)
            ts = float(ts)
        except (ValueError, TypeError):
            raise ClientError(f"recording line {n} is not an event") from None
        if not isinstance(data, str):
            continue
        if kind == "o":
            yield ts, data.encode("utf-8", "surrogateescape")
        elif kind == "b" and data.startswith("o:"):
            try:
                yield ts, base64.b64decode(data[2:], validate=True)
            except binascii.Error:
                raise ClientError(f"recording line {n} has bad base64") from None


def _size(value: object, default: int) -> int:
    if isinstance(value, int) and 0 < value <= MAX_SIZE:
        return value
    return default


class Player:
    """Playback state: position, speed, play/pause, and the emulated screen."""

    def __init__(self, cast: Cast) -> None:
        self.cast = cast
        self.speed = 1.0
        self.playing = True
        self.position = 0.0
        self._next = 0
        self.screen = pyte.Screen(cast.width, cast.height)
        self._stream = pyte.Stream(self.screen)

    @property
    def finished(self) -> bool:
        return self._next >= len(self.cast.events)

    def advance(self, real_seconds: float) -> bool:
        """Move ``real_seconds x speed`` forward; True when the screen changed."""
        if not self.playing or self.finished:
            return False
        self.position = min(self.cast.duration, self.position + real_seconds * self.speed)
        changed = self._feed_until(self.position)
        if self.finished:
            self.playing = False
        return changed

    def toggle(self) -> None:
        if self.finished:
            self.restart()
            self.playing = True
        else:
            self.playing = not self.playing

    def faster(self) -> None:
        self.speed = next((s for s in SPEEDS if s > self.speed), self.speed)

    def slower(self) -> None:
        self.speed = next((s for s in reversed(SPEEDS) if s < self.speed), self.speed)

    def restart(self) -> None:
        self.screen.reset()
        self._next = 0
        self.position = 0.0

    def seek(self, position: float) -> None:
        """Jump to ``position`` seconds (replaying from the start when going back)."""
        position = max(0.0, min(self.cast.duration, position))
        if position < self.position:
            self.restart()
        self.position = position
        self._feed_until(position)

    def to_end(self) -> None:
        self.seek(self.cast.duration)
        self.playing = False

    def _feed_until(self, position: float) -> bool:
        events = self.cast.events
        start = self._next
        while self._next < len(events) and events[self._next][0] <= position:
            self._stream.feed(events[self._next][1])
            self._next += 1
        return self._next != start
