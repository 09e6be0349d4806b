"""Replay a session's recording inside the app: pyte emulates the terminal it ran in."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import ScrollableContainer
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static

from client.errors import ClientError
from client.tui.cast import Player, parse_cast
from client.tui.messages import ApiFailed, RecordingLoaded
from client.tui.widgets.terminal import TerminalView

if TYPE_CHECKING:
    from client.tui.app import GpuhopApp

FPS = 30
SEEK_S = 5.0


class ReplayScreen(Screen[None]):
    BINDINGS = [
        Binding("space", "play_pause", "Play/pause"),
        Binding("plus,equals_sign", "faster", "Faster"),
        Binding("minus", "slower", "Slower"),
        Binding("left", "seek(-1)", "-5s", show=False),
        Binding("right", "seek(1)", "+5s", show=False),
        Binding("r", "restart", "Restart"),
        Binding("end", "to_end", "End"),
        Binding("escape,q", "close", "Back"),
    ]

    def __init__(self, session_id: str, *, autoplay: bool = True) -> None:
        super().__init__()
        self.session_id = session_id
        self.autoplay = autoplay
        self.player: Player | None = None
        self._timer: Timer | None = None
        self._last = 0.0

    def compose(self) -> ComposeResult:
        yield Static(f"Recording of session [b]{self.session_id}[/b] · loading…", id="title")
        with ScrollableContainer(id="term-box", can_focus=False):
            yield TerminalView(id="term")
        yield Static(id="progress")
        yield Footer()

    def on_mount(self) -> None:
        self.fetch()

    @work(exclusive=True, group="recording")
    async def fetch(self) -> None:
        data = cast("GpuhopApp", self.app).data
        if data is None:
            return
        try:
            text = await data.recording(self.session_id)
            recording = parse_cast(text)
        except ClientError as exc:
            self.post_message(ApiFailed("recording", exc))
            self.query_one("#title", Static).update(f"[red]{exc}[/red]")
            return
        self.post_message(RecordingLoaded(self.session_id, recording))

    @on(RecordingLoaded)
    def _loaded(self, message: RecordingLoaded) -> None:
        player = Player(message.cast)
        player.playing = self.autoplay
        self.player = player
        title = message.cast.title or self.session_id
        self.query_one("#title", Static).update(
            f"Recording: [b]{title}[/b] · {message.cast.width}x{message.cast.height} · "
            f"{len(message.cast.events)} events"
        )
        self._draw()
        self._last = time.monotonic()
        self._timer = self.set_interval(1 / FPS, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        elapsed, self._last = now - self._last, now
        player = self.player
        if player is not None and player.advance(elapsed):
            self._draw()
        elif player is not None and player.playing:
            self._show_progress()

    def _draw(self) -> None:
        if self.player is None:
            return
        self.query_one(TerminalView).show(self.player.screen)
        self._show_progress()

    def _show_progress(self) -> None:
        p = self.player
        if p is None:
            return
        state = "■ end" if p.finished else ("▶ playing" if p.playing else "❚❚ paused")
        total = p.cast.duration
        width = 30
        done = int(width * (p.position / total)) if total > 0 else width
        bar = "█" * done + "░" * (width - done)
        self.query_one("#progress", Static).update(
            f"{state}  {bar}  {p.position:5.1f}/{total:.1f} s  speed {p.speed:g}x"
        )

    @property
    def plain(self) -> str:
        return self.query_one(TerminalView).plain

    def action_play_pause(self) -> None:
        if self.player is not None:
            self.player.toggle()
            self._draw()

    def action_faster(self) -> None:
        if self.player is not None:
            self.player.faster()
            self._show_progress()

    def action_slower(self) -> None:
        if self.player is not None:
            self.player.slower()
            self._show_progress()

    def action_seek(self, direction: int) -> None:
        if self.player is not None:
            self.player.seek(self.player.position + direction * SEEK_S)
            self._draw()

    def action_restart(self) -> None:
        if self.player is not None:
            self.player.restart()
            self.player.playing = True
            self._draw()

    def action_to_end(self) -> None:
        if self.player is not None:
            self.player.to_end()
            self._draw()

    def action_close(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self.app.pop_screen()
