"""``gpuhop-gateway audit ls|show|export|verify-export|replay``: reading the audit log locally.

Each command takes ``--database URL`` or ``--config FILE`` (as ``audit verify``)
and reads through the audit store's ``list`` pages, so it works on SQLite and
PostgreSQL alike while a gateway keeps appending. Errors are one line on
stderr with the gateway's exit codes (``gateway.cli.one_line_errors``).
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast

import click

from gateway.errors import ChainBroken, ConfigError, GatewayError, StorageError

if TYPE_CHECKING:  # imported when a command runs: `gpuhop-gateway --help` stays quick
    from gateway.audit.chain import AuditEvent
    from gateway.audit.store import AuditStore

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DATA_WIDTH = 72  # characters of an event's data shown per row by ``ls``


def _one_line_errors(func: F) -> F:
    """``gateway.cli.one_line_errors``, imported when called: cli.py imports this module."""

    @functools.wraps(func)
    def quiet_pipe(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            # `... | head`: the reader left. Say nothing, and keep Python's exit-time
            # flush of stdout from raising the same error again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from gateway.cli import one_line_errors

        return one_line_errors(quiet_pipe)(*args, **kwargs)

    return cast(F, wrapper)


def _source(func: F) -> F:
    func = click.option(
        "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None
    )(func)
    return click.option("--database", default=None, help="Storage URL or SQLite path.")(func)


def database_url(database: str | None, config_path: Path | None) -> str:
    """The storage URL from ``--database``, else from the config file."""
    if database is not None:
        return database
    if config_path is None:
        raise ConfigError("give --database URL or --config FILE")
    from gateway.settings import load_settings

    return load_settings(config_path).gateway.storage_url.get_secret_value()


def _quiet_logs() -> None:
    from gateway.logs import configure

    configure("warning")  # to stderr: stdout carries events and exports


def _check_exists(url: str) -> None:
    """Reading must not create a database: a mistyped SQLite path is an error."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        raise ConfigError("memory:// holds no events to read")
    if scheme in ("", "sqlite"):
        path = url.split("://", 1)[1][1:] if scheme else url
        if path and not Path(path).is_file():
            raise StorageError(f"{path}: no such audit database")


def with_store(url: str, work: Callable[[AuditStore], Awaitable[T]]) -> T:
    """Open the store ``url`` names, run ``work`` on it, close it."""
    from gateway.audit.store import open_store

    _check_exists(url)
    _quiet_logs()

    async def main() -> T:
        store = open_store(url)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


def _row(e: AuditEvent) -> tuple[str, str, str, str, str]:
    from gateway.audit.chain import canonical_text
    from gateway.audit.export import iso_utc

    data = canonical_text(e.data)
    if len(data) > DATA_WIDTH:
        data = data[: DATA_WIDTH - 1] + "…"
    return str(e.id), iso_utc(e.ts)[:19] + "Z", e.kind, e.actor, data


@click.group("audit")
def audit_commands() -> None:
    """Read the audit log: list, show, export, replay recordings."""


@audit_commands.command("ls")
@_source
@click.option("--kind", default=None, help="Only events of this kind (e.g. session.start).")
@click.option("--actor", default=None, help="Only events by this actor (a user name).")
@click.option(
    "--since-id", type=click.IntRange(min=0), default=0, help="Only events after this id."
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--tail", is_flag=True, help="The newest --limit events, not the oldest.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line (as export).")
@_one_line_errors
def audit_ls(
    database: str | None,
    config_path: Path | None,
    kind: str | None,
    actor: str | None,
    since_id: int,
    limit: int,
    tail: bool,
    as_json: bool,
) -> None:
    """List events, oldest first; page on with --since-id LAST_ID."""
    from gateway.audit.export import iter_events, jsonl_line, newest_after_id

    async def work(store: AuditStore) -> list[AuditEvent]:
        after = since_id
        if tail:
            after = await newest_after_id(store, limit, kind=kind, actor=actor, after_id=after)
        it = iter_events(store, kind=kind, actor=actor, after_id=after, limit=limit)
        return [e async for e in it]

    events = with_store(database_url(database, config_path), work)
    if as_json:
        click.echo("".join(jsonl_line(e) for e in events), nl=False)
        return
    rows = [("ID", "TIME (UTC)", "KIND", "ACTOR", "DATA"), *(_row(e) for e in events)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[4])
    if len(events) == limit and not tail:
        click.echo(f"(more may follow: --since-id {events[-1].id})", err=True)


@audit_commands.command("show")
@_source
@click.argument("event_id", type=click.IntRange(min=1))
@_one_line_errors
def audit_show(database: str | None, config_path: Path | None, event_id: int) -> None:
    """Print one event as JSON with its hash link; exit 4 when that link is broken."""
    from gateway.audit.export import event_dict, get_event, iso_utc

    event, link = with_store(database_url(database, config_path), lambda s: get_event(s, event_id))
    if event is None or link is None:
        raise GatewayError(f"no audit event {event_id}")
    out: dict[str, object] = {"time": iso_utc(event.ts), **event_dict(event)}
    out["link"] = {
        "prev_id": link.prev_id,
        "prev_hash_matches": link.prev_ok,
        "hash_matches_contents": link.hash_ok,
    }
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    if not link.ok:
        what = "its contents" if not link.hash_ok else f"event {link.prev_id}"
        raise ChainBroken(f"event {event_id} does not match {what}", event_id)


@audit_commands.command("export")
@_source
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default="-",
    help="File to write (replaced once complete); - for stdout.",
)
@click.option("--kind", default=None)
@click.option("--actor", default=None)
@click.option("--since-id", type=click.IntRange(min=0), default=0)
@_one_line_errors
def audit_export(
    database: str | None,
    config_path: Path | None,
    fmt: str,
    out: Path,
    kind: str | None,
    actor: str | None,
    since_id: int,
) -> None:
    """Write events as JSONL (verifiable with verify-export) or CSV, a page at a time."""
    from gateway.audit.export import Format, export

    url = database_url(database, config_path)

    def run(f: TextIO) -> int:
        async def work(store: AuditStore) -> int:
            return await export(
                store, f, cast(Format, fmt), kind=kind, actor=actor, after_id=since_id
            )

        return with_store(url, work)

    started = time.monotonic()
    if str(out) == "-":
        count = run(sys.stdout)
        sys.stdout.flush()
    else:
        tmp = out.with_name(f".{out.name}.partial")
        try:
            with tmp.open("w", encoding="utf-8", newline="") as f:
                count = run(f)
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    click.echo(f"exported {count} events as {fmt} in {seconds:.2f} s", err=True)


@audit_commands.command("verify-export")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@_one_line_errors
def audit_verify_export(path: Path) -> None:
    """Verify a full JSONL export (from event 1) on its own, with no database."""
    from gateway.audit.export import verify_jsonl

    with path.open(encoding="utf-8") as f:
        result = verify_jsonl(f)
    if not result.ok:
        where = f"event {result.first_broken}" if result.first_broken is not None else "export"
        raise ChainBroken(f"{path}: chain broken at {where}: {result.reason}", result.first_broken)
    click.echo(f"{path}: audit chain ok: {result.count} events")


@audit_commands.command("replay")
@click.argument("session_id")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--recordings-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where recordings are (default: recordings_dir from --config).",
)
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=1.0)
@click.option(
    "--max-idle", type=click.FloatRange(min=0), default=None, help="Shorten longer pauses to this."
)
@click.option("--cat", "as_text", is_flag=True, help="Print the output at once, no timing.")
@click.option("--plain", is_flag=True, help="Drop terminal escape sequences (for grep, files).")
@_one_line_errors
def audit_replay(
    session_id: str,
    config_path: Path | None,
    recordings_dir: Path | None,
    speed: float,
    max_idle: float | None,
    as_text: bool,
    plain: bool,
) -> None:
    """Play a recorded session's terminal at its recorded speed (or --speed N), or --cat it."""
    from gateway.audit.replay import PlainText, play, read_cast, recording_path

    if recordings_dir is None:
        if config_path is None:
            raise ConfigError("give --recordings-dir DIR or --config FILE")
        from gateway.settings import load_settings

        recordings_dir = load_settings(config_path).gateway.recordings_dir
    path = recording_path(recordings_dir, session_id)
    stdout = sys.stdout.buffer
    cleaner = PlainText() if plain else None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(data: bytes) -> None:
        # Exact bytes as recorded; --plain decodes them (split characters joined) to clean them.
        if cleaner is not None:
            data = cleaner.feed(decoder.decode(data)).encode("utf-8")
        stdout.write(data)
        stdout.flush()

    with path.open(encoding="utf-8", errors="replace") as f:
        header, events = read_cast(f)
        if as_text:
            for _, text in events:
                write(text)
        else:
            size = f"{header.width}x{header.height}"
            click.echo(f"replaying {path.name}: {header.title} ({size})", err=True)
            try:
                play(
                    events,
                    write,
                    speed=speed,
                    max_idle=max_idle,
                    clock=time.monotonic,
                    sleep=time.sleep,
                )
            except KeyboardInterrupt:
                sys.exit(130)
    if cleaner is not None:
        stdout.write(cleaner.feed(decoder.decode(b"", final=True)).encode("utf-8"))
        stdout.write(cleaner.end().encode("utf-8", "replace"))
        stdout.flush()


if __name__ == "__main__":
    audit_commands()
