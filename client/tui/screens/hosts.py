"""Hosts, the home screen: every host with live latency, GPUs and price; Enter opens a shell."""

from __future__ import annotations

import asyncio

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input, Static

from client.api.clients import AsyncClient
from client.api.models import HostView
from client.tui.messages import HostsLoaded
from client.tui.screens.base import GpuhopScreen
from client.tui.screens.dialogs import EnvPicker, GpuPrompt
from client.tui.shell import ShellRequest
from client.tui.views import HOST_COLUMNS, SORT_ORDER, host_detail, host_rows
from client.tui.widgets.table import LiveTable

MAX_GPUS = 64


class HostTable(LiveTable):
    BINDINGS = [Binding("enter", "select_cursor", "Shell")]


class HostsScreen(GpuhopScreen):
    MODE = "hosts"
    BINDINGS = [
        Binding("slash", "search", "Search"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse", show=False),
        Binding("g", "gpus", "GPUs"),
        Binding("plus,equals_sign", "more_gpus", "+GPU", show=False),
        Binding("minus", "fewer_gpus", "-GPU", show=False),
        Binding("e", "env", "Env"),
        Binding("escape", "clear_search", "Clear", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.hosts: tuple[HostView, ...] = ()
        self.client_rtt_ms: float | None = None
        self.sort_key = "latency"
        self.reverse = False
        self.query_text = ""
        self.gpus = 1
        self.env = ""
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield self.nav()
        yield Input(
            placeholder="/ filter: name, region, GPU, country, 'free'", id="search", compact=True
        )
        yield HostTable(HOST_COLUMNS, unique="host", id="hosts")
        yield Static("Loading hosts…", id="detail")
        yield Static(id="request")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#search", Input).cursor_blink = not self.app.is_headless
        self.query_one(LiveTable).focus()
        self._show_request()

    @property
    def table(self) -> LiveTable:
        return self.query_one("#hosts", LiveTable)

    # -- data --

    def start_polling(self) -> None:
        self.poll_hosts()

    @work(exclusive=True, group="hosts")
    async def poll_hosts(self) -> None:
        """Every ``refresh_s``: the hosts, and the client's own RTT to the gateway."""
        while True:
            data = self.gpuhop.data
            if data is None:  # still logging in
                await asyncio.sleep(0.25)
                continue
            got = await self.call("hosts", _round(data))
            if got is not None:
                rtt, hosts = got
                self.post_message(HostsLoaded(tuple(hosts), rtt, self.gpuhop.clock()))
            await asyncio.sleep(self.gpuhop.pace())

    @on(HostsLoaded)
    def _loaded(self, message: HostsLoaded) -> None:
        if message.client_rtt_ms is not None:
            self.gpuhop.rtt.add(message.client_rtt_ms)
        self.client_rtt_ms = self.gpuhop.rtt.value
        self.gpuhop.set_status(client_rtt_ms=self.client_rtt_ms)
        self.hosts = message.hosts
        self.loaded = True
        self._render_rows()

    def _render_rows(self) -> None:
        rows = host_rows(
            self.hosts,
            self.client_rtt_ms,
            query=self.query_text,
            sort=self.sort_key,
            reverse=self.reverse,
        )
        self.table.sync(rows)
        self._show_detail()

    def _show_detail(self) -> None:
        detail = self.query_one("#detail", Static)
        host = self.selected_host()
        if host is not None:
            detail.update(host_detail(host, self.client_rtt_ms))
        elif self.loaded:
            shown = "no host matches the filter" if self.query_text else "no hosts"
            detail.update(f"[dim]{shown}[/dim]")

    def _show_request(self) -> None:
        gpus = f"{self.gpus} GPU{'s' if self.gpus != 1 else ''}" if self.gpus else "no GPUs"
        env = self.env or "default"
        arrow = "▼" if self.reverse else "▲"
        self.query_one("#request", Static).update(
            f"Shell gets [b]{gpus}[/b] (g ±) · env [b]{env}[/b] (e) · "
            f"sort {self.sort_key} {arrow} (s S)"
        )

    def selected_host(self) -> HostView | None:
        key = self.table.selected_key
        return next((h for h in self.hosts if h.name == key), None)

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._show_detail()

    # -- keys --

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_shell()

    def action_shell(self) -> None:
        host = self.selected_host()
        me = self.gpuhop.me
        if host is None:
            self.notify("No host selected.", severity="warning")
            return
        if me is None:
            self.notify("Not connected to the gateway yet.", severity="warning")
            return
        if not host.allowed:
            self.notify(f"denied: your roles do not grant {host.name}", title="Denied",
                        severity="error")  # fmt: skip
            return
        self.gpuhop.open_shell(ShellRequest(host.name, me.user, self.gpus, self.env))

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_clear_search(self) -> None:
        search = self.query_one("#search", Input)
        search.value = ""
        self.table.focus()

    @on(Input.Changed, "#search")
    def _filter(self, event: Input.Changed) -> None:
        self.query_text = event.value
        self._render_rows()

    @on(Input.Submitted, "#search")
    def _filter_done(self) -> None:
        self.table.focus()

    def action_sort(self) -> None:
        self.sort_key = SORT_ORDER[(SORT_ORDER.index(self.sort_key) + 1) % len(SORT_ORDER)]
        self._show_request()
        self._render_rows()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self._show_request()
        self._render_rows()

    def action_gpus(self) -> None:
        self.app.push_screen(GpuPrompt(self.gpus, MAX_GPUS), self._set_gpus)

    def _set_gpus(self, value: int | None) -> None:
        if value is not None:
            self.gpus = max(0, min(MAX_GPUS, value))
            self._show_request()

    def action_more_gpus(self) -> None:
        self._set_gpus(self.gpus + 1)

    def action_fewer_gpus(self) -> None:
        self._set_gpus(self.gpus - 1)

    def action_env(self) -> None:
        self.app.push_screen(EnvPicker(self.gpuhop.env_choices, self.env), self._set_env)

    def _set_env(self, value: str | None) -> None:
        if value is not None:
            self.env = value
            self._show_request()


async def _round(data: AsyncClient) -> tuple[float, list[HostView]]:
    hosts = await data.hosts()
    return await data.ping(), hosts  # timed on the connection the first call opened
