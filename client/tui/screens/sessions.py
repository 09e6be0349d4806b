"""Sessions: live sessions with duration, latency, GPUs and running cost; admins end them."""

from __future__ import annotations

import asyncio

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from client.api.clients import AsyncClient
from client.api.models import HostView, SessionView
from client.tui.format import cost
from client.tui.messages import SessionKilled, SessionsLoaded
from client.tui.screens.base import GpuhopScreen
from client.tui.screens.dialogs import ConfirmScreen
from client.tui.views import SESSION_COLUMNS, session_detail, session_rows
from client.tui.widgets.table import LiveTable


class SessionsScreen(GpuhopScreen):
    MODE = "sessions"
    BINDINGS = [
        Binding("k", "kill", "End session"),
        Binding("a", "toggle_recent", "Live/recent"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sessions: tuple[SessionView, ...] = ()
        self.live_only = True
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield self.nav()
        yield Static(id="scope")
        yield LiveTable(SESSION_COLUMNS, unique="id", id="sessions")
        yield Static(id="detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(LiveTable).focus()
        self._show_scope()

    @property
    def table(self) -> LiveTable:
        return self.query_one("#sessions", LiveTable)

    def start_polling(self) -> None:
        self.poll_sessions()

    @work(exclusive=True, group="sessions")
    async def poll_sessions(self) -> None:
        while True:
            data = self.gpuhop.data
            if data is None:  # still logging in
                await asyncio.sleep(0.25)
                continue
            got = await self.call("sessions", _round(data, self.live_only))
            if got is not None:
                rtt, sessions, hosts = got
                self.gpuhop.rtt.add(rtt)
                self.post_message(
                    SessionsLoaded(
                        tuple(sessions),
                        tuple(hosts),
                        self.gpuhop.rtt.value,
                        self.gpuhop.clock(),
                    )
                )
            await asyncio.sleep(self.gpuhop.pace())

    @on(SessionsLoaded)
    def _loaded(self, message: SessionsLoaded) -> None:
        self.sessions = message.sessions
        self.loaded = True
        self.table.sync(session_rows(message.sessions, message.hosts, message.client_rtt_ms))
        self._show_scope()
        self._show_detail()

    def _show_scope(self) -> None:
        me = self.gpuhop.me
        whose = "everyone's (admin)" if me is not None and me.is_admin else "yours"
        which = "Live sessions" if self.live_only else "Recent sessions"
        live = [s for s in self.sessions if s.live]
        total = sum(s.cost_usd or 0.0 for s in live)
        extra = f" · {len(live)} live, running cost {cost(total)}" if self.loaded else ""
        self.query_one("#scope", Static).update(f"[b]{which}[/b], {whose}{extra}")

    def _show_detail(self) -> None:
        session = self.selected()
        text = session_detail(session) if session is not None else ""
        if not text and self.loaded:
            text = "[dim]no live sessions: open one from Hosts (Enter)[/dim]"
        self.query_one("#detail", Static).update(text)

    def selected(self) -> SessionView | None:
        key = self.table.selected_key
        return next((s for s in self.sessions if s.id == key), None)

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._show_detail()

    def action_toggle_recent(self) -> None:
        self.live_only = not self.live_only
        self._show_scope()
        self.poll_sessions()

    def action_kill(self) -> None:
        session = self.selected()
        me = self.gpuhop.me
        if session is None or not session.live:
            self.notify("Select a live session first.", severity="warning")
            return
        if me is None or not me.is_admin:
            self.notify("denied: ending a session needs an admin token", title="Denied",
                        severity="error")  # fmt: skip
            return
        question = (
            f"End session {session.id[:8]} of {session.user} on {session.host}?\n"
            f"It has run {session.duration_s:.0f} s and cost {cost(session.cost_usd)}."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.kill(session.id)

        self.app.push_screen(ConfirmScreen(question), answered)

    @work(group="kill")
    async def kill(self, session_id: str) -> None:
        data = self.gpuhop.data
        if data is None:
            return
        if await self.call("end session", _kill(data, session_id)):
            self.post_message(SessionKilled(session_id))

    @on(SessionKilled)
    def _killed(self, message: SessionKilled) -> None:
        self.notify(f"Session {message.session_id[:8]} ended.", title="Ended")
        self.poll_sessions()


async def _round(
    data: AsyncClient, live_only: bool
) -> tuple[float, list[SessionView], list[HostView]]:
    sessions = await data.sessions(live=True if live_only else None, limit=100)
    hosts = await data.hosts()
    return await data.ping(), sessions, hosts


async def _kill(data: AsyncClient, session_id: str) -> bool:
    await data.kill(session_id)
    return True
