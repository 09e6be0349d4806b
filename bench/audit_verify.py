"""How fast can an admin verify and export the audit log?

Builds a temporary SQLite audit database with N events (default 1,000,000), then
times ``verify_database`` (the CLI's path), ``verify_events`` on events already
in memory, exporting events to JSONL through the store's ``list`` paging, and
group-committed appends. Prints events/s and the ratio to the 100k events/s
verification target.

    python bench/audit_verify.py [--events N] [--export N] [--appends N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.adapters.audit.sqlite import SQLiteAuditStore
from gateway.adapters.audit.store import verify_database
from gateway.domain.audit.chain import (
    GENESIS,
    AuditEvent,
    Row,
    canonical_text,
    event_hash,
    freeze_data,
    verify_events,
)

TARGET = 100_000  # events/s on one core
KINDS = ("session.open", "channel.exec", "session.close", "policy.deny")


def synthetic_rows(n: int) -> Iterator[Row]:
    """A valid chain of realistic-looking events, computed without the store."""
    prev = GENESIS
    t0 = 1_700_000_000.0
    for i in range(1, n + 1):
        data = {
            "host": f"sg-{i % 8}",
            "session": i // 10,
            "bytes": i * 37,
            "reason": "allowed by role gpu-dev",
        }
        text = canonical_text(data)
        kind, actor, ts = KINDS[i % 4], f"user{i % 50}", t0 + i * 0.01
        digest = event_hash(prev, i, ts, kind, actor, text)
        yield (i, ts, kind, actor, text, prev, digest)
        prev = digest


def build(path: Path, n: int) -> float:
    asyncio.run(SQLiteAuditStore(path).close())  # creates the schema the real way
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")  # bulk load only; the store uses FULL
    rows = synthetic_rows(n)
    while True:
        chunk = [row for _, row in zip(range(100_000), rows, strict=False)]
        if not chunk:
            break
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO audit_events(id, ts, kind, actor, data, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            chunk,
        )
        conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - started


async def export_jsonl(path: Path, out: Path, n: int) -> int:
    store = SQLiteAuditStore(path)
    written, after = 0, 0
    with out.open("w", encoding="utf-8") as f:
        while written < n:
            page = await store.list(after_id=after, limit=min(1000, n - written))
            if not page:
                break
            for e in page:
                f.write(canonical_text({**e.body(), "prev_hash": e.prev_hash, "hash": e.hash}))
                f.write("\n")
            written += len(page)
            after = page[-1].id
    await store.close()
    return written


async def appends(path: Path, n: int, concurrency: int) -> tuple[float, int]:
    store = SQLiteAuditStore(path)
    started = time.perf_counter()
    for start in range(0, n, concurrency):
        batch = range(start, min(n, start + concurrency))
        await asyncio.gather(*(store.append("bench", "u", {"i": i}) for i in batch))
    elapsed = time.perf_counter() - started
    await store.close()
    return elapsed, store.commits


def rate(label: str, count: int, seconds: float, target: int | None = None) -> None:
    per_s = count / seconds
    ratio = f"  ({per_s / target:.2f}x target {target:,}/s)" if target else ""
    print(f"{label:<38} {count:>10,} in {seconds:7.2f} s = {per_s:>11,.0f}/s{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--export", type=int, default=100_000)
    parser.add_argument("--appends", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gpuhop-bench-") as tmp:
        db = Path(tmp) / "audit.db"
        rate("build (chain + executemany)", args.events, build(db, args.events))
        print(f"database size: {os.path.getsize(db) / 2**20:.1f} MiB")

        started = time.perf_counter()
        result = verify_database(str(db))
        rate(
            "verify_database (SQLite, read-only)",
            result.count,
            time.perf_counter() - started,
            TARGET,
        )
        assert result.ok, result.reason

        events = [
            AuditEvent(i, ts, k, a, freeze_data(json.loads(d))[1], p, h)
            for i, ts, k, a, d, p, h in synthetic_rows(min(args.events, 200_000))
        ]
        started = time.perf_counter()
        mem = verify_events(events)
        rate("verify_events (in memory)", mem.count, time.perf_counter() - started, TARGET)

        out = Path(tmp) / "audit.jsonl"
        started = time.perf_counter()
        written = asyncio.run(export_jsonl(db, out, args.export))
        rate("export to JSONL (list, 1000/page)", written, time.perf_counter() - started)
        print(f"JSONL size: {out.stat().st_size / 2**20:.1f} MiB")

        for concurrency, n in ((1, min(args.appends, 500)), (args.concurrency, args.appends)):
            fresh = Path(tmp) / f"appends-{concurrency}.db"
            seconds, commits = asyncio.run(appends(fresh, n, concurrency))
            rate(f"append, {concurrency} concurrent (FULL)", n, seconds)
            print(f"  {commits} commits for {n} events, {seconds / commits * 1e3:.2f} ms/commit")


if __name__ == "__main__":
    main()
