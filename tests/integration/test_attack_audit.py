"""Attacks on the audit log and on session records, against a real gateway's database.

Each attack test lets a real ``gpuhop-gateway serve`` write a real database
(a real OpenSSH session through it, then a clean stop), tampers with that
database as someone with write access to it would (dropping the append-only
triggers first), and runs the real ``gpuhop-gateway audit verify --config``:
it must exit non-zero with one line naming the problem. SQLite by default;
PostgreSQL under GPUHOP_TEST_STORAGE=postgres.

The crash test kills a real gateway with SIGKILL while a real ssh session runs
through it, restarts it, and checks the session's record is closed, costed and
audited.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from gateway.adapters.keys import ensure_private_key
from gateway.domain.audit.chain import event_hash
from gateway.domain.audit.checkpoint import checkpoint_message
from tests.integration.conftest import build_stack
from tests.integration.gwstack import GatewayStack

pytestmark = pytest.mark.openssh

_DROP_GUARDS = {
    "sqlite": [
        "DROP TRIGGER IF EXISTS audit_events_no_update",
        "DROP TRIGGER IF EXISTS audit_events_no_delete",
    ],
    "postgresql": [
        "DROP TRIGGER IF EXISTS audit_events_no_update ON audit_events",
        "DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events",
    ],
}
_ROWS = "SELECT id, ts, kind, actor, data, prev_hash, hash FROM audit_events ORDER BY id"


class Database:
    """Raw SQL on the gateway's database, as an attacker holding its credentials."""

    def __init__(self, stack: GatewayStack) -> None:
        self.url = stack.database_url
        self.kind = "postgresql" if self.url.startswith("postgresql") else "sqlite"
        self.path = stack.database

    def _run(self, statements: list[tuple[str, tuple[Any, ...]]], fetch: str = "") -> list[Any]:
        if self.kind == "sqlite":
            con = sqlite3.connect(self.path)
            try:
                for sql, args in statements:
                    con.execute(sql, args)
                rows = con.execute(fetch).fetchall() if fetch else []
                con.commit()
            finally:
                con.close()
            return rows
        import psycopg

        with psycopg.connect(self.url.replace("postgresql+psycopg", "postgresql")) as pg:
            for sql, args in statements:
                pg.execute(sql.replace("?", "%s"), args)
            return pg.execute(fetch).fetchall() if fetch else []

    def rows(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._run([], _ROWS)]

    def tables(self) -> set[str]:
        sql = (
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            if self.kind == "sqlite"
            else "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
        return {r[0] for r in self._run([], sql)}

    def tamper(self, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
        """Run ``statements`` with the append-only guards dropped (statements on
        ``audit_checkpoints`` are skipped where there is no such table)."""
        has_checkpoints = "audit_checkpoints" in self.tables()
        steps: list[tuple[str, tuple[Any, ...]]] = [(s, ()) for s in _DROP_GUARDS[self.kind]]
        for s in statements:
            step = (s, ()) if isinstance(s, str) else s
            if has_checkpoints or "audit_checkpoints" not in step[0]:
                steps.append(step)
        self._run(steps)


def verify(stack: GatewayStack, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gateway.cli", "audit", "verify", "--config", str(stack.config)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60)


def assert_detected(result: subprocess.CompletedProcess[str], phrase: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stdout + result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gpuhop-gateway: error: audit chain broken at event "), lines
    assert phrase in lines[0], lines[0]


@pytest.fixture
def written(tmp_path: Path) -> Iterator[GatewayStack]:
    """A database a real gateway wrote: start, one real ssh session, clean stop."""
    stack = build_stack(tmp_path)
    try:
        stack.start_gateway(timeout=60)
        alice = stack.users["alice"]
        result = stack.run(stack.jump_command(alice, "sg-1", "echo", "hi"))
        assert result.returncode == 0, result.stderr
        stack.wait_audit_events("session.end")
        assert stack.stop_gateway() == 0
        ok = verify(stack)
        assert ok.returncode == 0, ok.stderr
        assert "audit chain ok" in ok.stdout
        yield stack
    finally:
        stack.close()


def test_truncating_the_tail_is_detected(written: GatewayStack) -> None:
    db = Database(written)
    head = db.rows()[-1][0]
    db.tamper(
        ("DELETE FROM audit_events WHERE id > ?", (head - 2,)),
        ("DELETE FROM audit_checkpoints WHERE event_id > ?", (head - 2,)),
    )
    assert_detected(verify(written), "(events deleted or the log truncated)")


def test_deleting_every_row_is_detected(written: GatewayStack) -> None:
    db = Database(written)
    db.tamper("DELETE FROM audit_events", "DELETE FROM audit_checkpoints")
    assert db.rows() == []
    assert_detected(verify(written), "chain ends at event 0")


def _rehash_from(db: Database, event_id: int, actor: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Statements that change event ``event_id``'s actor and re-link every later event."""
    rows = db.rows()
    prev = rows[event_id - 2][6] if event_id > 1 else "0" * 64
    steps: list[tuple[str, tuple[Any, ...]]] = []
    for i, ts, kind, who, data, _old_prev, _old_hash in rows[event_id - 1 :]:
        who = actor if i == event_id else who
        digest = event_hash(prev, i, ts, kind, who, data)
        steps.append(
            ("UPDATE audit_events SET actor = ?, prev_hash = ?, hash = ? WHERE id = ?",
             (who, prev, digest, i))
        )  # fmt: skip
        prev = digest
    return steps


def test_editing_a_row_and_rehashing_the_rest_is_detected(written: GatewayStack) -> None:
    db = Database(written)
    target = next(r[0] for r in db.rows() if r[2] == "session.start")
    db.tamper(*_rehash_from(db, target, "mallory"))
    assert [r[3] for r in db.rows() if r[0] == target] == ["mallory"]
    assert_detected(verify(written), "(rewritten and the chain re-hashed)")


def test_rehashing_and_deleting_the_checkpoints_is_detected(written: GatewayStack) -> None:
    db = Database(written)
    target = next(r[0] for r in db.rows() if r[2] == "session.start")
    db.tamper(*_rehash_from(db, target, "mallory"), "DELETE FROM audit_checkpoints")
    # With no checkpoint left in the database, the anchor file still names the old head...
    assert_detected(verify(written), "differs from anchor file")
    # ...and without it, nothing signed covers the rewritten events.
    assert_detected(verify(written, "--no-anchor"), "not covered by a signed checkpoint")


def _forge(db: Database) -> tuple[int, str, float, list[tuple[str, tuple[Any, ...]]]]:
    last = db.rows()[-1]
    new_id, ts = last[0] + 1, time.time()
    data = json.dumps({"host": "sg-1", "session_id": "forged"}, separators=(",", ":"))
    digest = event_hash(last[6], new_id, ts, "session.end", "alice", data)
    insert = (
        "INSERT INTO audit_events(id, ts, kind, actor, data, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (new_id, ts, "session.end", "alice", data, last[6], digest),
    )
    return new_id, digest, ts, [insert]


def test_a_forged_append_is_detected(written: GatewayStack) -> None:
    db = Database(written)
    new_id, _digest, _ts, steps = _forge(db)
    db.tamper(*steps)
    assert_detected(verify(written), f"event {new_id} not covered by a signed checkpoint")


def test_a_forged_append_with_a_self_signed_checkpoint_is_detected(
    written: GatewayStack, tmp_path: Path
) -> None:
    db = Database(written)
    new_id, digest, ts, steps = _forge(db)
    mine = ensure_private_key(tmp_path / "attacker_key", "")
    real = asyncssh.read_private_key(str(written.root / "keys" / "audit_checkpoint"))
    sig = mine.sign(checkpoint_message(new_id, digest, ts), b"ssh-ed25519")
    steps.append(
        (
            "INSERT INTO audit_checkpoints(event_id, hash, ts, key_id, signature)"
            " VALUES (?, ?, ?, ?, ?)",
            (new_id, digest, ts, real.get_fingerprint(), base64.b64encode(sig).decode()),
        )
    )
    db.tamper(*steps)
    assert_detected(verify(written), "not signed by a trusted audit key (forged)")


def test_verify_json_prints_the_head_and_expect_head_checks_it(written: GatewayStack) -> None:
    db = Database(written)
    last = db.rows()[-1]
    out = verify(written, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["head"] == {"id": last[0], "hash": last[6]}
    assert report["signed_through"] == last[0]
    assert report["anchor"] == {"id": last[0], "hash": last[6]}
    head = f"{last[0]}:{last[6]}"
    assert verify(written, "--expect-head", head).returncode == 0
    wrong = verify(written, "--expect-head", f"{last[0]}:{'0' * 64}")
    assert_detected(wrong, "does not have the expected hash")
    bad = verify(written, "--expect-head", "not-a-head")
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == [
        "gpuhop-gateway: error: --expect-head: expected ID:HASH "
        "(a decimal event id, a colon, 64 lowercase hex digits)"
    ]
    # An operator's copy of the head catches a truncation even without the anchor file.
    db.tamper(
        ("DELETE FROM audit_events WHERE id = ?", (last[0],)),
        ("DELETE FROM audit_checkpoints WHERE event_id = ?", (last[0],)),
    )
    assert_detected(verify(written, "--no-anchor", "--expect-head", head), "expected head")


def test_a_missing_anchor_file_fails_closed(written: GatewayStack) -> None:
    (written.root / "keys" / "audit_anchor.json").unlink()
    result = verify(written)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1
    assert "audit anchor file missing" in result.stderr


def _live_records(stack: GatewayStack) -> list[dict[str, Any]]:
    db = Database(stack)
    sql = "SELECT id, ended_at, error, cost_usd, gpus, started_at FROM session_records"
    rows = db._run([], sql)
    keys = ("id", "ended_at", "error", "cost_usd", "gpus", "started_at")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def test_kill_9_then_restart_closes_the_session_with_an_error_and_a_cost(tmp_path: Path) -> None:
    stack = build_stack(tmp_path)
    try:
        stack.start_gateway(timeout=60)
        cfg = str(stack.ssh_config(stack.users["rita"]))
        ticker = "echo started; while :; do echo tick; sleep 0.2; done"
        cmd = ["ssh", "-F", cfg, "-oSetEnv=GPUHOP_GPUS=2", "-T", "rita+sg-1@gw", ticker]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        time.sleep(2.0)  # let it run (and record output) for a while
        records = _live_records(stack)
        assert len(records) == 1 and records[0]["ended_at"] is None and records[0]["gpus"] == 2
        assert stack.proc is not None
        stack.proc.kill()
        stack.proc.wait()
        stack.proc = None
        proc.stdout.close()
        proc.wait(timeout=30)
        stack.start_gateway(timeout=60)
        record = _live_records(stack)[0]
        assert record["ended_at"] is not None, record
        assert "crash or kill" in record["error"]
        ran = record["ended_at"] - record["started_at"]
        assert 1.5 <= ran <= 10, record  # up to its last recorded output, not the restart
        assert record["cost_usd"] == pytest.approx(2 * 2.5 * ran / 3600, rel=1e-3, abs=1e-6)
        assert record["cost_usd"] > 0
        ends = stack.wait_audit_events("session.end", lambda e: e["session_id"] == record["id"])
        assert len(ends) == 1 and ends[0]["reconciled"] is True
        assert ends[0]["cost_usd"] == record["cost_usd"]
        stack.stop_gateway()
        ok = verify(stack)  # the chain, written across a kill -9, still verifies
        assert ok.returncode == 0, ok.stderr
    finally:
        stack.close()


def test_a_starting_replica_leaves_another_nodes_live_session_alone(tmp_path: Path) -> None:
    """Two gateway nodes on one database: node b starting must not close node a's session."""
    stack = build_stack(tmp_path, extra_gateway='node_name = "a"')
    other: subprocess.Popen[bytes] | None = None
    try:
        stack.start_gateway(timeout=60)
        alice = stack.users["alice"]
        proc = subprocess.Popen(
            stack.jump_command(alice, "sg-1", "echo up; sleep 30"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"up\n"
        config_b = tmp_path / "gateway-b.toml"
        config_b.write_text(stack.config.read_text().replace('"a"', '"b"', 1))
        ready = tmp_path / "ready-b.json"
        cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_b)]
        with (tmp_path / "gateway-b.log").open("ab") as log:
            other = subprocess.Popen([*cmd, "--ready-file", str(ready)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while not ready.exists() and other.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), (tmp_path / "gateway-b.log").read_text()[-2000:]
        records = _live_records(stack)
        assert len(records) == 1 and records[0]["ended_at"] is None, records
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    finally:
        if other is not None and other.poll() is None:
            other.terminate()
            other.wait(15)
        stack.close()
