"""asciicast recordings: every byte back exactly, compact for any bytes, bounded, fail closed."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from client.tui.cast import output_bytes, parse_cast
from gateway.adapters.asciicast.recording import Limits, Recording, RecordingError
from gateway.adapters.asciicast.replay import read_cast

NO_RESERVE = Limits(min_free_bytes=0)


def _record(path: Path, chunks: Sequence[bytes], limits: Limits = NO_RESERVE) -> Recording:
    rec = Recording(path, width=80, height=24, term="xterm", title="t", limits=limits)
    for chunk in chunks:
        rec.output(chunk)
    rec.close()
    return rec


def _replayed(path: Path) -> bytes:
    with path.open(encoding="utf-8") as f:
        _, events = read_cast(f)
        return b"".join(data for _, data in events)


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


RNG = random.Random(7)
STREAMS = {
    "random": RNG.randbytes(1 << 20),
    "text": b"".join(b"line %d of some plain text\n" % i for i in range(40_000)),
    "cjk": "日本語のテキスト、句読点つき。\n".encode() * 20_000,
    "escapes": b"\x1b" * (1 << 20),
    "ansi": b"\x1b[01;32mroot@host\x1b[00m:\x1b[01;34m~\x1b[00m# ls\r\n" * 20_000,
    "mixed": b"".join(
        RNG.choice([b"ok\n", b"\xff\xfe", "é".encode(), b"\x00\x1b"]) for _ in range(200_000)
    ),
}


@pytest.mark.parametrize("size", [1, 7, 4095, 32768])
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_any_stream_in_any_chunks_comes_back_exactly_and_compact(
    tmp_path: Path, name: str, size: int
) -> None:
    data = STREAMS[name]
    if size < 100:
        data = data[: 32 * 1024]  # tiny chunks: fewer of them
    path = tmp_path / "r.cast"
    rec = _record(path, _chunks(data, size))
    assert _replayed(path) == data
    assert output_bytes(path.read_text()) == data  # the client's reader agrees
    ratio = path.stat().st_size / len(data)
    assert path.stat().st_size == rec.bytes_written
    assert path.stat().st_size <= 1.5 * len(data) + 1024, ratio  # + the header
    if name == "text" and size > 1000:
        assert ratio <= 1.2
    stamps = [json.loads(line)[0] for line in path.read_text().splitlines()[1:]]
    assert stamps == sorted(stamps)


def test_text_stays_text_for_asciinema_even_split_mid_character(tmp_path: Path) -> None:
    data = "héllo wörld €\n".encode() * 1000
    path = tmp_path / "r.cast"
    _record(path, _chunks(data, 4093))  # 4093: splits characters
    kinds = {json.loads(line)[1] for line in path.read_text().splitlines()[1:]}
    assert kinds == {"o"}
    assert "".join(t for _, t in parse_cast(path.read_text()).events) == data.decode()


def test_a_held_back_partial_character_is_written_at_close(tmp_path: Path) -> None:
    path = tmp_path / "r.cast"
    _record(path, [b"abc", b"\xe2\x82"])  # the session ended mid-character
    assert _replayed(path) == b"abc\xe2\x82"


def test_input_is_recorded_apart_and_not_replayed_as_output(tmp_path: Path) -> None:
    path = tmp_path / "r.cast"
    rec = Recording(
        path, width=80, height=24, term="", title="t", record_input=True, limits=NO_RESERVE
    )
    rec.output(b"$ ")
    rec.input(b"\xff\x00ls\r")
    rec.output(b"\xff\x00out")
    rec.resize(100, 40)
    rec.close()
    events = [json.loads(line)[1:] for line in path.read_text().splitlines()[1:]]
    assert ["i", "\xff\x00ls\r".encode("latin-1").decode("utf-8", "replace")] not in events
    assert ["b", "i:/wBscw0="] in events and ["r", "100x40"] in events
    assert _replayed(path) == b"$ \xff\x00out"


def test_the_size_cap_stops_the_recording_and_the_file_stays_whole(tmp_path: Path) -> None:
    path = tmp_path / "r.cast"
    rec = Recording(path, width=80, height=24, term="", title="t", limits=Limits(65536, 0))
    accepted = b""
    with pytest.raises(RecordingError, match=r"size cap of 0\.1 MiB"):
        for i in range(1000):  # bounded: the cap comes first
            chunk = os.urandom(1000) if i % 2 else b"text\n" * 200
            rec.output(chunk)
            accepted += chunk
    assert "size cap" in rec.failed and path.stat().st_size <= 65536
    assert _replayed(path) == accepted  # everything accepted, nothing more
    with pytest.raises(RecordingError):
        rec.output(b"after the cap")  # stays stopped


def test_below_the_free_space_reserve_no_recording_is_created(tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with pytest.raises(RecordingError, match="below its reserve"):
        Recording(tmp_path / "r.cast", width=80, height=24, term="", title="t",
                  limits=Limits(min_free_bytes=free + (1 << 30)))  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_a_recording_that_cannot_be_created_is_a_recording_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(RecordingError, match="cannot create recording"):
        Recording(tmp_path / "file" / "r.cast", width=80, height=24, term="", title="t")
    Recording(tmp_path / "r.cast", width=80, height=24, term="", title="t", limits=NO_RESERVE)
    with pytest.raises(RecordingError, match="cannot create recording"):  # never overwritten
        Recording(tmp_path / "r.cast", width=80, height=24, term="", title="t", limits=NO_RESERVE)
