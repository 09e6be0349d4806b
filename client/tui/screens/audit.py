"""Audit (admins): events with filters, and replay of a session's recording."""

from __future__ import annotations

import json

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Input, Label, Static

from client.api.models import AuditEvent
from client.tui.messages import AuditLoaded
from client.tui.screens.base import GpuhopScreen
from client.tui.screens.replay import ReplayScreen
from client.tui.views import AUDIT_COLUMNS, audit_rows
from client.tui.widgets.table import LiveTable

PAGE = 200


class EventTable(LiveTable):
    BINDINGS = [Binding("enter", "select_cursor", "Replay")]


class AuditScreen(GpuhopScreen):
    MODE = "audit"
    BINDINGS = [
        Binding("p", "replay", "Replay", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("n", "next_page", "Next page"),
        Binding("r", "reload", "Reload"),
        Binding("escape", "leave_filter", "Done", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.events: tuple[AuditEvent, ...] = ()
        self.next_after_id: int | None = None
        self.denied = False

    def compose(self) -> ComposeResult:
        yield self.nav()
        with Horizontal(id="filters"):
            yield Label("Kind")
            yield Input(placeholder="e.g. session.start", id="kind", compact=True)
            yield Label("Actor")
            yield Input(placeholder="user", id="actor", compact=True)
        yield Static(id="count")
        yield EventTable(AUDIT_COLUMNS, unique="id", id="events")
        yield Static(id="detail")
        yield Footer()

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = not self.app.is_headless
        self.query_one(LiveTable).focus()

    @property
    def table(self) -> LiveTable:
        return self.query_one("#events", LiveTable)

    def start_polling(self) -> None:
        self.load(after_id=0, append=False)

    def _filters(self) -> tuple[str, str]:
        return (
            self.query_one("#kind", Input).value.strip(),
            self.query_one("#actor", Input).value.strip(),
        )

    @work(exclusive=True, group="audit")
    async def load(self, after_id: int, append: bool) -> None:
        data = self.gpuhop.data
        if data is None:
            return
        kind, actor = self._filters()
        page = await self.call(
            "audit", data.audit(kind=kind, actor=actor, after_id=after_id, limit=PAGE)
        )
        if page is None:
            self.denied = True
            self._show_count()
            return
        self.denied = False
        self.post_message(AuditLoaded(page, append))

    @on(AuditLoaded)
    def _loaded(self, message: AuditLoaded) -> None:
        events = message.page.events
        self.events = (*self.events, *events) if message.append else events
        self.next_after_id = message.page.next_after_id
        # newest first, the way people read a log
        self.table.sync(audit_rows(reversed(self.events)))
        self._show_count()
        self._show_detail()

    def _show_count(self) -> None:
        if self.denied and not self.events:
            text = "[red]The audit log needs an admin token.[/red]"
        else:
            more = " · more: n" if self.next_after_id is not None else ""
            text = f"{len(self.events)} events, newest first{more} · ▶ = recording (p)"
        self.query_one("#count", Static).update(text)

    def selected(self) -> AuditEvent | None:
        key = self.table.selected_key
        return next((e for e in self.events if str(e.id) == key), None)

    @on(DataTable.RowHighlighted)
    def _show_detail(self) -> None:
        event = self.selected()
        text = "" if event is None else f"[b]{event.kind}[/b] " + json.dumps(event.data)
        self.query_one("#detail", Static).update(text[:400])

    @on(DataTable.RowSelected)
    def _chosen(self) -> None:
        self.action_replay()

    @on(Input.Submitted)
    def _filtered(self) -> None:
        self.table.focus()
        self.action_reload()

    def action_leave_filter(self) -> None:
        self.table.focus()

    def action_filter(self) -> None:
        self.query_one("#kind", Input).focus()

    def action_reload(self) -> None:
        self.load(after_id=0, append=False)

    def action_next_page(self) -> None:
        if self.next_after_id is None:
            self.notify("This is the last page.")
            return
        self.load(after_id=self.next_after_id, append=True)

    def action_replay(self) -> None:
        event = self.selected()
        if event is None or event.session_id is None:
            self.notify("Select an event of a session (session.start or session.end).",
                        severity="warning")  # fmt: skip
            return
        self.app.push_screen(ReplayScreen(event.session_id))
