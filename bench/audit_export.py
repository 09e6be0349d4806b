"""Audit export (JSONL, CSV) and chain verification, on SQLite and on PostgreSQL.

For each backend: bulk-load a valid chain of N events (default 1,000,000; the
chain is computed with the gateway's own hashing), time ``verify_database`` (the
path of ``gpuhop-gateway audit verify``) against the 100k events/s target, then
export the first M events (default 100,000) through the store's ``list`` paging,
as JSONL and as CSV, and check the JSONL export still verifies on its own.
PostgreSQL is a private server started here on loopback (``initdb`` in /tmp).

    python bench/audit_export.py [--backend sqlite|postgres|both] [--events N] [--export M]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # tests.integration.pg is not an installed package
    sys.path.insert(0, str(REPO))

from audit_verify import TARGET, synthetic_rows  # noqa: E402

from gateway.adapters.audit.pgconn import conninfo_of  # noqa: E402
from gateway.adapters.audit.store import open_store, verify_database  # noqa: E402
from gateway.adapters.storage import migrate  # noqa: E402
from gateway.domain.audit.chain import AuditEvent, Row, canonical_text, verify_rows  # noqa: E402
from gateway.ports import AuditStore  # noqa: E402
from tests.integration.pg import PgServer, find_bindir  # noqa: E402

PAGE = 1000
CSV_FIELDS = ("id", "ts", "kind", "actor", "data", "prev_hash", "hash")


def rate(label: str, count: int, seconds: float, target: int | None = None) -> float:
    per_s = count / seconds
    ratio = f"  ({per_s / target:.2f}x target {target:,}/s)" if target else ""
    print(f"{label:<44} {count:>10,} in {seconds:7.2f} s = {per_s:>11,.0f}/s{ratio}", flush=True)
    return per_s


def chunks(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    while chunk := [row for _, row in zip(range(size), rows, strict=False)]:
        yield chunk


def load_sqlite(path: Path, n: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")  # bulk load only; the store uses FULL
    for chunk in chunks(synthetic_rows(n), 100_000):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO audit_events(id, ts, kind, actor, data, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            chunk,
        )
        conn.execute("COMMIT")
    conn.close()


def load_postgres(url: str, n: int) -> None:
    import psycopg

    info, _ = conninfo_of(url)
    with psycopg.connect(info) as conn:
        conn.execute("SET synchronous_commit TO off")  # bulk load only; the store uses on
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY audit_events(id, ts, kind, actor, data, prev_hash, hash) FROM STDIN"
            ) as copy,
        ):
            for row in synthetic_rows(n):
                copy.write_row(row)
        conn.commit()
    with psycopg.connect(info, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE audit_events")  # as autovacuum would, soon after


def jsonl_line(e: AuditEvent) -> str:
    return canonical_text({**e.body(), "prev_hash": e.prev_hash, "hash": e.hash}) + "\n"


async def export(store: AuditStore, out: Path, n: int, fmt: str) -> int:
    """Page through ``list`` (as an admin export does) and write JSONL or CSV."""
    written, after = 0, 0
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n") if fmt == "csv" else None
        if writer is not None:
            writer.writerow(CSV_FIELDS)
        while written < n:
            page = await store.list(after_id=after, limit=min(PAGE, n - written))
            if not page:
                break
            if writer is None:
                f.writelines(jsonl_line(e) for e in page)
            else:
                writer.writerows(
                    (e.id, repr(e.ts), e.kind, e.actor, canonical_text(e.data), e.prev_hash, e.hash)
                    for e in page
                )
            written += len(page)
            after = page[-1].id
    return written


def verify_jsonl(path: Path) -> int:
    """An export verifies without the database: the data text is canonical again."""

    def rows() -> Iterator[Row]:
        with path.open(encoding="utf-8") as f:
            for line in f:
                e = json.loads(line)
                data = canonical_text(e["data"])
                yield (e["id"], e["ts"], e["kind"], e["actor"], data, e["prev_hash"], e["hash"])

    result = verify_rows(rows())
    assert result.ok, result.reason
    return result.count


def run_backend(name: str, url: str, tmp: Path, events: int, n_export: int) -> dict[str, float]:
    print(f"\n## {name}: {url.split('@')[-1]}", flush=True)
    migrate.upgrade(url)  # the schema the real way
    started = time.perf_counter()
    if name == "sqlite":
        load_sqlite(Path(url.removeprefix("sqlite:///")), events)
    else:
        load_postgres(url, events)
    rate("bulk load (chain + insert)", events, time.perf_counter() - started)
    figures: dict[str, float] = {}

    started = time.perf_counter()
    result = verify_database(url)
    assert result.ok and result.count == events, result.reason
    figures["verify"] = rate(
        f"verify_database ({name})", events, time.perf_counter() - started, TARGET
    )

    async def exports() -> None:
        store = open_store(url)
        try:
            for fmt in ("jsonl", "csv"):
                out = tmp / f"{name}.{fmt}"
                started = time.perf_counter()
                count = await export(store, out, n_export, fmt)
                seconds = time.perf_counter() - started
                figures[f"export {fmt}"] = rate(
                    f"export {fmt.upper()} (list, {PAGE}/page)", count, seconds
                )
                print(f"  {out.stat().st_size / 2**20:.1f} MiB", flush=True)
        finally:
            await store.close()

    asyncio.run(exports())
    started = time.perf_counter()
    count = verify_jsonl(tmp / f"{name}.jsonl")
    rate("verify the JSONL export (no database)", count, time.perf_counter() - started)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--export", type=int, default=100_000)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="gpuhop-bench-") as tmp:
        if args.backend in ("sqlite", "both"):
            url = f"sqlite:///{Path(tmp) / 'audit.db'}"
            results["sqlite"] = run_backend("sqlite", url, Path(tmp), args.events, args.export)
        if args.backend in ("postgres", "both"):
            bindir = find_bindir()
            if bindir is None:
                sys.exit("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin)")
            with PgServer(bindir) as server:
                server.start()
                url = server.create_database("gpuhop_bench")
                results["postgres"] = run_backend(
                    "postgres", url, Path(tmp), args.events, args.export
                )
    print(
        "\n| backend | verify events/s | target met | export JSONL events/s | export CSV events/s |"
    )
    print("|---|---:|---|---:|---:|")
    for name, f in results.items():
        met = "yes" if f["verify"] >= TARGET else "**no**"
        jsonl, csv_rate = f["export jsonl"], f["export csv"]
        print(f"| {name} | {f['verify']:,.0f} | {met} | {jsonl:,.0f} | {csv_rate:,.0f} |")
    print(
        f"\n(cpus: {os.cpu_count()}; export of {args.export:,} events, verify of {args.events:,})"
    )


if __name__ == "__main__":
    main()
