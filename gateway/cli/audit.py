"""``gpuhop-gateway audit verify|ls|show|export|verify-export|replay``: the audit log, locally.

Each command takes ``--database URL`` or ``--config FILE`` (as ``audit verify``)
and reads through the audit store's ``list`` pages, so it works on SQLite and
PostgreSQL alike while a gateway keeps appending. Errors are one line on
stderr with the gateway's exit codes (``gateway.cli.common.one_line_errors``).
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

from gateway.cli.common import one_line_errors
from gateway.config.loader import load_settings
from gateway.errors import ChainBroken, ConfigError, GatewayError, StorageError

if TYPE_CHECKING:  # imported when a command runs: `gpuhop-gateway --help` stays quick
    from gateway.domain.audit.chain import AuditEvent
    from gateway.ports import AuditStore

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DATA_WIDTH = 72  # characters of an event's data shown per row by ``ls``


def _one_line_errors(func: F) -> F:
    """``one_line_errors``, and silence when the reader of stdout goes away."""

    @functools.wraps(func)
    def quiet_pipe(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            # `... | head`: the reader left. Say nothing, and keep Python's exit-time
            # flush of stdout from raising the same error again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)

    return one_line_errors(cast(F, quiet_pipe))


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
    return load_settings(config_path).gateway.storage_url.get_secret_value()


def _quiet_logs() -> None:
    from gateway.adapters.logs import configure

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
    from gateway.adapters.audit.store import open_store

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
    from gateway.domain.audit.chain import canonical_text
    from gateway.services.auditexport import iso_utc

    data = canonical_text(e.data)
    if len(data) > DATA_WIDTH:
        data = data[: DATA_WIDTH - 1] + "…"
    return str(e.id), iso_utc(e.ts)[:19] + "Z", e.kind, e.actor, data


@click.group("audit")
def audit_commands() -> None:
    """The tamper-evident audit log."""


@audit_commands.command("verify")
@click.option("--database", default=None, help="Storage URL or SQLite path.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None)
@click.option(
    "--checkpoint-key",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Audit checkpoint key (private, or its .pub) that signs the chain "
    "(default: the config's audit_checkpoint_key).",
)
@click.option(
    "--anchor",
    "anchor_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Anchor file holding the newest signed head (default: the config's audit_anchor_file).",
)
@click.option("--no-anchor", is_flag=True, help="Check signatures only, not the anchor file.")
@click.option(
    "--expect-head", default=None, metavar="ID:HASH", help="Fail unless the chain holds this event."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result (and the head) as JSON.")
@one_line_errors
def audit_verify(
    database: str | None,
    config_path: Path | None,
    checkpoint_key: Path | None,
    anchor_path: Path | None,
    no_anchor: bool,
    expect_head: str | None,
    as_json: bool,
) -> None:
    """Walk the hash chain and check it against its signed checkpoints and anchor.

    Exit 0 when it holds; else one line naming the first problem: a broken link,
    an event rewritten, events deleted from the end, or events appended without
    the audit key. Without --config or --checkpoint-key only the links are checked.
    """
    from gateway.adapters.audit.anchor import TrustedKeys, anchors_for
    from gateway.adapters.audit.store import verify_database
    from gateway.domain.audit.checkpoint import parse_head

    g = load_settings(config_path).gateway if config_path is not None else None
    if database is None:
        if g is None:
            raise ConfigError("give --database URL or --config FILE")
        database = g.storage_url.get_secret_value()
    try:
        expect = parse_head(expect_head) if expect_head is not None else None
    except ValueError as exc:
        raise ConfigError(f"--expect-head: {exc}") from None
    key_path = checkpoint_key or (g.audit_checkpoint_key if g is not None else None)
    if anchor_path is None and g is not None and not no_anchor:
        anchor_path = g.audit_anchor_file
    anchors = None
    if key_path is not None:
        anchor_file = None if no_anchor else anchor_path
        anchors = anchors_for(
            TrustedKeys.from_file(key_path), anchor_file, expect, require_anchor=True
        )
    elif expect is not None or anchor_path is not None:
        raise ConfigError("--expect-head and --anchor need --config or --checkpoint-key")
    result = verify_database(database, anchors)
    if as_json:
        anchor = anchors.anchor if anchors is not None else None
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "count": result.count,
                    "first_broken": result.first_broken,
                    "reason": result.reason,
                    "head": {"id": result.head_id, "hash": result.head_hash},
                    "signed_through": result.signed_through,
                    "anchor": None
                    if anchor is None
                    else {"id": anchor.event_id, "hash": anchor.hash},
                }
            )
        )
    if not result.ok:
        raise ChainBroken(
            f"audit chain broken at event {result.first_broken}: {result.reason}",
            result.first_broken,
        )
    if anchors is None:
        click.echo(
            "gpuhop-gateway: note: checkpoints not checked (give --config or --checkpoint-key)",
            err=True,
        )
    if not as_json:
        signed = (
            "" if result.signed_through is None else f", signed through {result.signed_through}"
        )
        head = f"{result.head_id}:{result.head_hash}"
        click.echo(f"audit chain ok: {result.count} events, head {head}{signed}")


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
    from gateway.services.auditexport import iter_events, jsonl_line, newest_after_id

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
    from gateway.services.auditexport import event_dict, get_event, iso_utc

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
    from gateway.services.auditexport import Format, export

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
    from gateway.services.auditexport import verify_jsonl

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
    from gateway.adapters.asciicast.replay import PlainText, play, read_cast, recording_path

    if recordings_dir is None:
        if config_path is None:
            raise ConfigError("give --recordings-dir DIR or --config FILE")
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
