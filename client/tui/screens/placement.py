"""Placement: constraints in, hosts ranked out, and why each other host is excluded.

ctrl+g runs the golden test: the gateway runs its short probe job on the best
three hosts at once (GPUs leased for the run) and the table below shows each
host's prediction beside what it measured.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Input, Label, Static

from client.api.models import Constraints, Golden, Placement
from client.tui.messages import GoldenLoaded, PlacementLoaded
from client.tui.screens.base import GpuhopScreen
from client.tui.views import (
    EXCLUDED_COLUMNS,
    GOLDEN_COLUMNS,
    RANKED_COLUMNS,
    excluded_rows,
    golden_rows,
    ranked_rows,
)
from client.tui.widgets.table import LiveTable

GOLDEN_HINT = (
    "Golden test (ctrl+g): run a short job on the best 3 hosts and compare measured "
    "time and cost with the prediction."
)
GOLDEN_TOP = 3

FIELDS = (
    ("gpus", "GPUs", "1", "integer", "0-1024"),
    ("gpu_model", "Model", "", "text", "any"),
    ("max_latency_ms", "Max ms", "", "number", "any"),
    ("max_price", "Max $/h", "", "number", "any"),
    ("data", "Data", "", "text", "data set"),
)


class PlacementScreen(GpuhopScreen):
    MODE = "placement"
    BINDINGS = [
        Binding("f", "form", "Edit"),
        Binding("ctrl+r", "rank", "Rank"),
        Binding("ctrl+g", "golden", "Golden test"),
        Binding("escape", "leave_form", "Done", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.result: Placement | None = None
        self.golden: Golden | None = None

    def compose(self) -> ComposeResult:
        yield self.nav()
        with Horizontal(id="form"):
            for key, label, value, kind, hint in FIELDS:
                yield Label(label)
                yield Input(
                    value,
                    placeholder=hint,
                    type=kind,  # type: ignore[arg-type]
                    id=key,
                    compact=True,
                )
        yield Static("Set constraints, then Enter.", id="verdict")
        yield LiveTable(RANKED_COLUMNS, unique="host", id="ranked")
        yield LiveTable(EXCLUDED_COLUMNS, unique="host", id="excluded")
        yield Static(f"[dim]{GOLDEN_HINT}[/dim]", id="golden")
        yield LiveTable(GOLDEN_COLUMNS, unique="host", id="golden-results")
        yield Footer()

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = not self.app.is_headless
        self.query_one("#ranked", LiveTable).focus()
        self.action_rank()

    def action_form(self) -> None:
        self.query_one("#gpus", Input).focus()

    def action_leave_form(self) -> None:
        self.query_one("#ranked", LiveTable).focus()

    def constraints(self) -> Constraints:
        """The form's values; a field that does not parse counts as empty."""

        def value(key: str) -> str:
            return self.query_one(f"#{key}", Input).value.strip()

        def number(key: str) -> float | None:
            try:
                return float(value(key)) if value(key) else None
            except ValueError:
                return None

        gpus = number("gpus")
        return Constraints(
            gpus=int(gpus) if gpus is not None else 1,
            gpu_model=value("gpu_model"),
            max_latency_ms=number("max_latency_ms"),
            max_price=number("max_price"),
            data=value("data"),
            client_rtt_ms=self.gpuhop.rtt.value or 0.0,
        )

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_rank()

    def action_rank(self) -> None:
        self.rank(self.constraints())

    def action_golden(self) -> None:
        constraints = self.constraints()
        self.query_one("#golden", Static).update(
            f"Golden test running on the best {GOLDEN_TOP} hosts for {constraints.gpus} GPU(s)…"
        )
        self.run_golden(constraints)

    @work(exclusive=True, group="golden")
    async def run_golden(self, constraints: Constraints) -> None:
        data = self.gpuhop.data
        if data is None:
            return
        result = await self.call("golden test", data.golden(constraints, GOLDEN_TOP))
        if result is None:
            self.query_one("#golden", Static).update("[red]Golden test failed[/red] (see notice)")
            return
        self.post_message(GoldenLoaded(result))

    @on(GoldenLoaded)
    def _golden_loaded(self, message: GoldenLoaded) -> None:
        self.golden = message.golden
        hosts = message.golden.hosts
        self.query_one("#golden-results", LiveTable).sync(golden_rows(hosts))
        ok = [h for h in hosts if h.status == "ok"]
        if not hosts:
            verdict = "[red]Golden test: no host qualifies[/red]"
        elif ok:
            fastest = min(ok, key=lambda h: h.seconds)
            verdict = (
                f"Golden test: [b]{len(ok)}/{len(hosts)}[/b] ran it; fastest "
                f"[b]{fastest.name}[/b] {fastest.seconds:.2f} s"
            )
        else:
            verdict = f"[red]Golden test: no host ran it[/red] ({hosts[0].error})"
        self.query_one("#golden", Static).update(verdict)

    @work(exclusive=True, group="placement")
    async def rank(self, constraints: Constraints) -> None:
        data = self.gpuhop.data
        if data is None:
            return
        result = await self.call("placement", data.placement(constraints))
        if result is not None:
            self.post_message(PlacementLoaded(result))

    @on(PlacementLoaded)
    def _loaded(self, message: PlacementLoaded) -> None:
        self.result = message.placement
        ranked, excluded = message.placement.ranked, message.placement.excluded
        self.query_one("#ranked", LiveTable).sync(ranked_rows(ranked))
        self.query_one("#excluded", LiveTable).sync(excluded_rows(excluded))
        if ranked:
            best = ranked[0]
            verdict = (
                f"Best: [b]{best.name}[/b] ({best.region}), {best.latency_ms:.0f} ms, "
                f"{best.expected_cost:.2f} {best.currency}/h · "
                f"{len(ranked)} qualify, {len(excluded)} excluded"
            )
        else:
            verdict = f"[red]No host qualifies[/red] · {len(excluded)} excluded (reasons below)"
        self.query_one("#verdict", Static).update(verdict)
