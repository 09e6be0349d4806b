"""``gpuhop-gateway audit ls|show|export|verify-export|replay`` on real databases and recordings.

Events come from the store API (SQLite, or PostgreSQL under
``GPUHOP_TEST_STORAGE=postgres``) and from a real gateway in front of real
OpenSSH hosts; recordings are written by the gateway's own ``Recording``.
"""

from __future__ import annotations

import asyncio
import builtins
import csv
import io
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.adapters.asciicast.recording import Recording
from gateway.adapters.asciicast.replay import PlainText, play
from gateway.adapters.audit.memory import MemoryAuditStore
from gateway.adapters.audit.store import open_store
from gateway.cli.audit import audit_commands
from gateway.domain.audit.chain import GENESIS, AuditEvent
from gateway.services.auditexport import PAGE, export, newest_after_id
from tests.integration.conftest import build_stack
from tests.integration.gwstack import GatewayStack, new_storage_url

N = 120  # events in the shared database: more than one ls page, fewer than an export page
USERS = ("alice", "bob", "rita")


def cli(*args: str) -> Result:
    return CliRunner().invoke(audit_commands, list(args), catch_exceptions=False)


def fill(url: str, n: int) -> None:
    async def main() -> None:
        store = open_store(url)
        try:
            for i in range(1, n + 1):
                kind = "session.start" if i % 3 == 0 else "auth.ok"
                data = {"i": i, "note": 'ünïcode, "quotes", commas', "nested": {"b": [1, 2]}}
                await store.append(kind, USERS[i % 3], data)
        finally:
            await store.close()

    asyncio.run(main())


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = new_storage_url(tmp_path_factory.mktemp("admin"))
    fill(url, N)
    return url


# ---------------------------------------------------------------- ls


def test_ls_table_pages_with_since_id(db: str) -> None:
    first = cli("ls", "--database", db, "--limit", "50")
    assert first.exit_code == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].split() == ["ID", "TIME", "(UTC)", "KIND", "ACTOR", "DATA"]
    assert len(lines) == 51 and lines[1].split()[0] == "1" and lines[50].split()[0] == "50"
    assert "--since-id 50" in first.stderr
    rest = cli("ls", "--database", db, "--since-id", "100", "--limit", "50")
    ids = [int(line.split()[0]) for line in rest.stdout.splitlines()[1:]]
    assert ids == list(range(101, N + 1))
    assert "more may follow" not in rest.stderr


def test_ls_filters_and_json(db: str) -> None:
    result = cli("ls", "--database", db, "--kind", "session.start", "--actor", "alice", "--json")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    expected = [i for i in range(1, N + 1) if i % 3 == 0 and USERS[i % 3] == "alice"]
    assert [e["id"] for e in events] == expected[:50]
    assert all(e["kind"] == "session.start" and e["actor"] == "alice" for e in events)
    assert set(events[0]) == {"id", "ts", "kind", "actor", "data", "prev_hash", "hash"}


def test_ls_tail_shows_the_newest(db: str) -> None:
    result = cli("ls", "--database", db, "--tail", "--limit", "5", "--json")
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == list(
        range(N - 4, N + 1)
    )
    bob = cli("ls", "--database", db, "--tail", "--limit", "3", "--actor", "bob", "--json")
    want = [i for i in range(1, N + 1) if USERS[i % 3] == "bob"][-3:]
    assert [json.loads(line)["id"] for line in bob.stdout.splitlines()] == want


async def test_newest_after_id_is_exact_at_every_size() -> None:
    store = MemoryAuditStore()
    for i in range(1, 40):
        await store.append("k" if i % 4 else "rare", "a", {})
    for n in range(0, 45):
        after = await newest_after_id(store, n)
        got = [e.id for e in await store.list(after_id=after, limit=n)]
        assert got == (list(range(1, 40))[-n:] if n else []), n
    rare = await newest_after_id(store, 2, kind="rare", after_id=10)
    assert [e.id for e in await store.list(kind="rare", after_id=rare, limit=2)] == [32, 36]


# ---------------------------------------------------------------- show


def test_show_prints_the_event_and_its_link(db: str) -> None:
    result = cli("show", "--database", db, "7")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["id"] == 7 and shown["data"]["i"] == 7
    assert shown["time"].endswith("Z") and shown["time"][:2] == "20"
    assert shown["link"] == {"prev_id": 6, "prev_hash_matches": True, "hash_matches_contents": True}
    six = json.loads(cli("show", "--database", db, "6").stdout)
    assert shown["prev_hash"] == six["hash"]
    one = json.loads(cli("show", "--database", db, "1").stdout)
    assert one["prev_hash"] == GENESIS and one["link"]["prev_id"] is None


def test_show_missing_event(db: str) -> None:
    result = cli("show", "--database", db, str(N + 1))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"gpuhop-gateway: error: no audit event {N + 1}"


def _tampered(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    fill(str(path), 5)
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("UPDATE audit_events SET actor = 'mallory' WHERE id = 3")
    conn.commit()
    conn.close()
    return path


def test_show_names_a_broken_link(tmp_path: Path) -> None:
    path = str(_tampered(tmp_path))
    edited = cli("show", "--database", path, "3")
    assert edited.exit_code == 4
    assert json.loads(edited.stdout)["link"]["hash_matches_contents"] is False
    assert "event 3 does not match its contents" in edited.stderr
    assert cli("show", "--database", path, "4").exit_code == 0  # its link to 3 still holds


# ---------------------------------------------------------------- export


def test_export_jsonl_verifies_on_its_own(db: str, tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    result = cli("export", "--database", db, "--format", "jsonl", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert f"exported {N} events as jsonl" in result.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == list(range(1, N + 1))
    assert not list(tmp_path.glob(".*partial"))
    ok = cli("verify-export", str(out))
    assert ok.exit_code == 0 and ok.stdout.strip().endswith(f"audit chain ok: {N} events")
    lines[9] = lines[9].replace('"i":10', '"i":11')
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    broken = cli("verify-export", str(out))
    assert broken.exit_code == 4 and "chain broken at event 10" in broken.stderr


def test_export_csv_columns(db: str, tmp_path: Path) -> None:
    out = tmp_path / "audit.csv"
    assert cli("export", "--database", db, "--format", "csv", "--out", str(out)).exit_code == 0
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "ts", "kind", "actor", "data", "prev_hash", "hash"]
    assert len(rows) == N + 1
    row = rows[3]
    assert row[0] == "3" and row[2] == "session.start" and row[3] == "alice"
    assert row[1].endswith("Z") and row[1][10] == "T" and len(row[1]) == 27
    assert json.loads(row[4])["note"] == 'ünïcode, "quotes", commas'
    canonical = json.dumps(
        json.loads(row[4]), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert row[4] == canonical
    assert rows[2][6] == row[5]  # the chain, row to row


def test_export_to_stdout_with_filters(db: str) -> None:
    result = cli("export", "--database", db, "--kind", "auth.ok", "--since-id", "100")
    ids = [json.loads(line)["id"] for line in result.stdout.splitlines()]
    assert ids == [i for i in range(101, N + 1) if i % 3]


def test_export_of_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = cli("export", "--database", str(tmp_path / "nope.db"), "--out", str(out))
    assert result.exit_code == 3 and "no such audit database" in result.stderr
    assert not (tmp_path / "nope.db").exists() and not out.exists()
    assert list(tmp_path.iterdir()) == []


class CountingStore(MemoryAuditStore):
    """Remembers the largest page asked for: an export must never ask for everything."""

    largest = 0

    async def list(
        self,
        *,
        kind: str | None = None,
        actor: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> builtins.list[AuditEvent]:
        self.largest = max(self.largest, limit)
        return await super().list(kind=kind, actor=actor, after_id=after_id, limit=limit)


async def test_export_pages_in_constant_memory() -> None:
    store = CountingStore()
    for i in range(2 * PAGE + 7):
        await store.append("k", "a", {"i": i})
    out = io.StringIO()
    assert await export(store, out, "jsonl") == 2 * PAGE + 7
    assert store.largest == PAGE


# ---------------------------------------------------------------- replay


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    d = tmp_path / "recordings"
    header = {"version": 2, "width": 100, "height": 30, "timestamp": 0, "title": "t"}
    events = [[0.0, "o", "\x1b[1;32mone\x1b[0m\r\n"], [0.3, "i", "x"], [0.3, "o", "tw"]]
    events += [[0.6, "r", "90x20"], [0.6, "o", "o\r\n\x1b]0;title\x07three\r\n"]]
    d.mkdir()
    (d / "abc123.cast").write_text(
        "\n".join(json.dumps(x) for x in [header, *events]) + "\n", encoding="utf-8"
    )
    return d


def test_replay_cat_and_plain(recordings: Path) -> None:
    raw = cli("replay", "abc123", "--recordings-dir", str(recordings), "--cat")
    assert raw.exit_code == 0, raw.stderr
    assert raw.stdout_bytes == b"\x1b[1;32mone\x1b[0m\r\ntwo\r\n\x1b]0;title\x07three\r\n"
    plain = cli("replay", "abc123", "--recordings-dir", str(recordings), "--cat", "--plain")
    assert plain.stdout_bytes == b"one\ntwo\nthree\n"


def test_replay_keeps_time_scaled_by_speed(recordings: Path) -> None:
    started = time.monotonic()
    result = cli("replay", "abc123", "--recordings-dir", str(recordings), "--speed", "3")
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes.endswith(b"three\r\n") and "replaying abc123.cast" in result.stderr
    assert 0.18 <= elapsed < 3.0  # 0.6 s recorded at 3x


def test_play_schedule_with_max_idle() -> None:
    now = [0.0]
    written: list[tuple[float, str]] = []

    def sleep(s: float) -> None:
        now[0] += s

    events = [(0.0, "a"), (1.0, "b"), (61.0, "c"), (61.5, "d")]

    def write(text: str) -> None:
        written.append((now[0], text))

    length = play(events, write, speed=2.0, max_idle=2.0, clock=lambda: now[0], sleep=sleep)
    assert written == [(0.0, "a"), (0.5, "b"), (1.5, "c"), (1.75, "d")]
    assert length == 1.75


@pytest.mark.parametrize(
    ("session_id", "why"), [("nope", "no recording for session nope"), ("../x", "is not a")]
)
def test_replay_refuses_unknown_sessions(recordings: Path, session_id: str, why: str) -> None:
    result = cli("replay", session_id, "--recordings-dir", str(recordings), "--cat")
    assert result.exit_code == 3 and why in result.stderr


def test_replay_of_a_real_recording(tmp_path: Path) -> None:
    rec = Recording(tmp_path / "r1.cast", width=80, height=24, term="xterm", title="alice -> sg-1")
    rec.output("héllo ".encode())
    rec.output(b"\xc3")  # a character split between two reads
    rec.output(b"\xa9\r\n")
    rec.close()
    result = cli("replay", "r1", "--recordings-dir", str(tmp_path), "--cat")
    assert result.stdout_bytes == "héllo é\r\n".encode()


def test_plain_text_holds_sequences_split_between_events() -> None:
    p = PlainText()
    out = p.feed("a\x1b[3") + p.feed("1mb\x1b]0;ti") + p.feed("tle\x07c\x1b") + p.feed("(Bd")
    assert out + p.end() == "abcd"


# ---------------------------------------------------------------- a real gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    s = build_stack(tmp_path_factory.mktemp("admin-gw"))
    try:
        s.start_gateway()
        yield s
    finally:
        s.close()


@pytest.mark.openssh
def test_sessions_of_a_real_gateway(gw: GatewayStack) -> None:
    result = gw.run(gw.jump_command(gw.users["rita"], "sg-1", "echo recorded-output"))
    assert result.returncode == 0 and result.stdout == b"recorded-output\n"
    deadline = time.monotonic() + 10
    ends: list[dict[str, object]] = []
    while not ends and time.monotonic() < deadline:
        listed = cli("ls", "--config", str(gw.config), "--kind", "session.end", "--json")
        ends = [json.loads(line) for line in listed.stdout.splitlines()]
        time.sleep(0.05)
    assert ends, "no session.end event"
    end = ends[-1]
    assert end["actor"] == "rita" and end["data"]["mode"] == "recorded"  # type: ignore[index]
    session_id = str(end["data"]["session_id"])  # type: ignore[index]
    shown = json.loads(cli("show", "--config", str(gw.config), str(end["id"])).stdout)
    assert shown["link"]["hash_matches_contents"] and shown["link"]["prev_hash_matches"]
    replay = cli("replay", session_id, "--config", str(gw.config), "--cat", "--plain")
    assert replay.exit_code == 0, replay.stderr
    assert "recorded-output" in replay.stdout
    assert cli("verify-export", "/dev/null").exit_code == 0  # an empty export is an empty chain
