"""Rows for the TUI's tables: filtering, sorting and cell text. Pure; unit-tested.

Screens call these with the latest data and hand the result to ``LiveTable``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.text import Text

from client.api.models import AuditEvent, Excluded, GoldenHost, HostView, Ranked, SessionView
from client.tui.format import (
    DASH,
    clip,
    cost,
    duration,
    end_to_end,
    gpu_short,
    money,
    ms,
    pct,
    sparkline,
)
from client.tui.widgets.table import Cell, Column

HOST_COLUMNS = (
    Column("status", " ", 1),
    Column("region", "Region", 6),
    Column("host", "Host", 10),
    Column("gpu", "GPU", 9),
    Column("free", "Free", 5),
    Column("util", "Util", 4),
    Column("latency", "Latency", 7),
    Column("trend", "Trend", 6),
    Column("price", "$/GPUh", 6),
    Column("residency", "Data", 4),
)

# name, key function; the key gets (host, end-to-end latency)
SORTS: dict[str, Callable[[HostView, float | None], Any]] = {
    "latency": lambda h, e2e: (e2e is None, e2e or 0.0, h.name),
    "price": lambda h, _: (h.price_per_gpu_hour, h.name),
    "free": lambda h, _: (-h.gpus_free, h.name),
    "name": lambda h, _: h.name,
    "region": lambda h, _: (h.region, h.name),
    "util": lambda h, _: (h.utilization_pct is None, h.utilization_pct or 0.0, h.name),
}
SORT_ORDER = tuple(SORTS)

STATUS_STYLE = {"up": "green", "down": "bold red", "unknown": "dim"}
_MEM = re.compile(r"^\d+GB$", re.IGNORECASE)


def gpu_label(model: str) -> str:
    """``NVIDIA A100-SXM4-80GB`` -> ``A100 80GB``: the family and memory, for narrow columns."""
    parts = re.split(r"[-\s]+", gpu_short(model))
    mem = [p for p in parts[1:] if _MEM.match(p)]
    return " ".join([parts[0], *mem[:1]]) if parts and parts[0] else model


def matches(host: HostView, query: str) -> bool:
    """Every word of ``query`` appears in the host's name, region, country, GPU,
    residency or status (case-insensitive); ``free`` keeps hosts with free GPUs."""
    hay = " ".join(
        [host.name, host.region, host.country, host.gpu_model, host.status, *host.residency]
    ).lower()
    for word in query.lower().split():
        if word == "free":
            if host.gpus_free <= 0:
                return False
        elif word not in hay:
            return False
    return True


def host_rows(
    hosts: Iterable[HostView],
    client_rtt_ms: float | None,
    *,
    query: str = "",
    sort: str = "latency",
    reverse: bool = False,
) -> list[tuple[str, list[Cell]]]:
    keyfn = SORTS.get(sort, SORTS["latency"])
    shown = [h for h in hosts if matches(h, query)]
    shown.sort(key=lambda h: keyfn(h, end_to_end(client_rtt_ms, h.rtt_ms)), reverse=reverse)
    return [(h.name, host_cells(h, client_rtt_ms)) for h in shown]


def host_cells(h: HostView, client_rtt_ms: float | None) -> list[Cell]:
    dim = "" if h.allowed else "dim"
    e2e = end_to_end(client_rtt_ms, h.rtt_ms)
    free_style = "green" if h.gpus_free > 0 else "red"
    util = h.utilization_pct
    util_style = "" if util is None else ("red" if util >= 90 else "yellow" if util >= 60 else "")
    return [
        Text("●", style=STATUS_STYLE.get(h.status, "dim")),
        Text(clip(h.region, 6), style=dim),
        Text(h.name, style=dim or "bold"),
        Text(gpu_label(h.gpu_model), style=dim),
        Text(f"{h.gpus_free}/{h.gpus_total}", style=dim or free_style),
        Text(pct(util), style=dim or util_style),
        Text(ms(e2e), style=dim or _latency_style(e2e)),
        Text(sparkline(h.rtt_history, 6), style=dim or "cyan"),
        Text(money(h.price_per_gpu_hour), style=dim),
        Text(clip(",".join(h.residency) or DASH, 4), style=dim),
    ]


def _latency_style(value: float | None) -> str:
    if value is None:
        return "dim"
    return "green" if value < 50 else "yellow" if value < 100 else "red"


def host_detail(h: HostView, client_rtt_ms: float | None) -> str:
    where = f"{h.region} ({h.country})" if h.country else h.region
    p95 = f" p95 {ms(h.rtt_p95_ms)}" if h.rtt_p95_ms is not None else ""
    access = "allowed" if h.allowed else "not allowed for you"
    labels = " ".join(f"{k}={v}" for k, v in sorted(h.labels.items()))
    return (
        f"[b]{h.name}[/b] {h.status} · {where} · {gpu_short(h.gpu_model)} x{h.gpus_total} · "
        f"host {ms(h.rtt_ms)}{p95} + you {ms(client_rtt_ms)} · "
        f"egress {money(h.egress_per_gb)}/GB · {access}" + (f" · {labels}" if labels else "")
    )


SESSION_COLUMNS = (
    Column("id", "Session", 8),
    Column("user", "User", 8),
    Column("host", "Host", 10),
    Column("mode", "Mode", 8),
    Column("age", "Time", 7),
    Column("latency", "Latency", 7),
    Column("gpus", "GPUs", 4),
    Column("cost", "Cost", 8),
)


def session_rows(
    sessions: Sequence[SessionView], hosts: Sequence[HostView], client_rtt_ms: float | None
) -> list[tuple[str, list[Cell]]]:
    rtt = {h.name: h.rtt_ms for h in hosts}
    rows: list[tuple[str, list[Cell]]] = []
    for s in sessions:
        live = "" if s.live else "dim"
        rows.append(
            (
                s.id,
                [
                    Text(s.id[:8], style=live),
                    Text(clip(s.user, 8), style=live),
                    Text(clip(s.host, 10), style=live or "bold"),
                    Text(s.mode, style=live),
                    Text(duration(s.duration_s), style=live),
                    Text(ms(end_to_end(client_rtt_ms, rtt.get(s.host))), style=live),
                    Text(str(s.gpus), style=live),
                    Text(cost(s.cost_usd), style=live or "yellow"),
                ],
            )
        )
    return rows


def session_detail(s: SessionView) -> str:
    state = "live" if s.live else f"ended, exit {DASH if s.exit_status is None else s.exit_status}"
    return (
        f"[b]{s.id}[/b] {s.user} → {s.account or '?'}@{s.host} ({s.region}) · {s.mode} · {state}"
        f" · {_bytes(s.bytes_up)} up / {_bytes(s.bytes_down)} down"
        + (f" · from {s.source}" if s.source else "")
        + (f" · [red]{s.error}[/red]" if s.error else "")
    )


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


RANKED_COLUMNS = (
    Column("rank", "#", 2),
    Column("host", "Host", 10),
    Column("region", "Region", 6),
    Column("gpu", "GPU", 9),
    Column("free", "Free", 4),
    Column("latency", "Latency", 7),
    Column("cost", "Cost/h", 8),
    Column("score", "Score", 6),
)
EXCLUDED_COLUMNS = (
    Column("host", "Excluded", 10),
    Column("region", "Region", 6),
    Column("why", "Why", 52),
)


def ranked_rows(ranked: Iterable[Ranked]) -> list[tuple[str, list[Cell]]]:
    return [
        (
            r.name,
            [
                Text(str(r.rank), style="bold"),
                Text(r.name, style="bold" if r.rank == 1 else ""),
                r.region,
                gpu_label(r.gpu_model),
                str(r.free_gpus),
                Text(ms(r.latency_ms), style=_latency_style(r.latency_ms)),
                money(r.expected_cost, "$" if r.currency == "USD" else r.currency + " "),
                f"{r.score:.3f}",
            ],
        )
        for r in ranked
    ]


GOLDEN_COLUMNS = (
    Column("rank", "#", 2),
    Column("host", "Golden", 10),
    Column("predicted", "Predicted", 14),
    Column("result", "Result", 10),
    Column("time", "Time", 7),
    Column("rtt", "RTT", 6),
    Column("cost", "Cost", 8),
    Column("out", "Output", 24),
)


def golden_rows(hosts: Iterable[GoldenHost]) -> list[tuple[str, list[Cell]]]:
    """Each candidate's prediction (cost/h, latency) beside what its run measured (wall
    time, the round trip on the connection it ran over, the cost of that time)."""
    rows: list[tuple[str, list[Cell]]] = []
    for h in hosts:
        ok = h.status == "ok"
        verdict = h.status if h.exit_status in (None, 0) else f"{h.status} {h.exit_status}"
        ran = h.status in ("ok", "failed", "timeout")
        symbol = "$" if h.currency == "USD" else h.currency + " "
        rows.append(
            (
                h.name,
                [
                    Text(str(h.rank), style="bold"),
                    Text(h.name, style="bold" if h.rank == 1 else ""),
                    f"{money(h.predicted_cost, symbol)} {ms(h.predicted_latency_ms)}",
                    Text(verdict, style="green" if ok else "red"),
                    f"{h.seconds:.2f} s" if ran else DASH,
                    ms(h.rtt_ms),
                    money(h.measured_cost, symbol) if ran else DASH,
                    (h.output[-1] if ok and h.output else h.error) or DASH,
                ],
            )
        )
    return rows


def excluded_rows(excluded: Iterable[Excluded]) -> list[tuple[str, list[Cell]]]:
    return [
        (e.name, [Text(e.name, style="dim"), e.region, "; ".join(e.reasons) or DASH])
        for e in excluded
    ]


AUDIT_COLUMNS = (
    Column("id", "#", 5),
    Column("time", "Time", 8),
    Column("kind", "Kind", 15),
    Column("actor", "Actor", 8),
    Column("what", "What", 32),
)


def audit_rows(events: Iterable[AuditEvent]) -> list[tuple[str, list[Cell]]]:
    rows: list[tuple[str, list[Cell]]] = []
    for e in events:
        style = "red" if "deny" in e.kind or "fail" in e.kind else ""
        replay = "▶ " if e.session_id and e.kind in ("session.start", "session.end") else ""
        rows.append(
            (
                str(e.id),
                [
                    Text(str(e.id)),
                    clock(e.ts),
                    Text(clip(e.kind, 15), style=style),
                    clip(e.actor, 8),
                    Text(clip(replay + summarize(e.data), 32)),
                ],
            )
        )
    return rows


def clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%H:%M:%S")


def summarize(data: dict[str, Any]) -> str:
    """One line from an event's data, the fields people look for first."""
    order = ("host", "user", "mode", "reason", "gpus", "cost_usd", "duration_s", "session_id")
    parts = []
    for key in order:
        if key in data and data[key] not in (None, "", 0):
            value = data[key]
            if isinstance(value, float):
                value = f"{value:.4g}"
            parts.append(f"{key}={value}")
    if not parts:
        parts = [f"{k}={v}" for k, v in list(data.items())[:3]]
    return " ".join(parts)
