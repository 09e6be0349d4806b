"""Environments: the ``images/`` directories, their fingerprints, and per-host status."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from client.errors import ClientError
from client.tui.envs import UNKNOWN, EnvRow, load_envs
from client.tui.format import clip
from client.tui.messages import ApiFailed, EnvsLoaded
from client.tui.screens.base import GpuhopScreen
from client.tui.widgets.table import Cell, Column, LiveTable

ENV_COLUMNS = (
    Column("name", "Environment", 14),
    Column("gpus", "GPUs", 4),
    Column("fingerprint", "Fingerprint", 19),
    Column("hosts", "On hosts", 8),
    Column("description", "Description", 21),
)
PUSH_UNAVAILABLE = (
    "Per-host status and push (p) need the gateway to report host images and to relay "
    "a sync; it does not yet, so hosts show 'unknown'."
)


def env_rows(envs: tuple[EnvRow, ...]) -> list[tuple[str, list[Cell]]]:
    return [
        (
            e.name,
            [
                Text(e.name, style="bold"),
                str(e.gpus),
                Text(clip(e.fingerprint, 19), style="red" if e.error else "cyan"),
                Text(UNKNOWN, style="dim"),
                clip(e.description or e.error, 21),
            ],
        )
        for e in envs
    ]


class EnvironmentsScreen(GpuhopScreen):
    MODE = "environments"
    BINDINGS = [
        Binding("r", "reload", "Reload"),
        Binding("p", "push", "Push"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.envs: tuple[EnvRow, ...] = ()

    def compose(self) -> ComposeResult:
        yield self.nav()
        yield Static(id="where")
        yield LiveTable(ENV_COLUMNS, unique="name", id="envs")
        yield Static(id="detail")
        yield Static(f"[dim]{PUSH_UNAVAILABLE}[/dim]", id="push-note")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#where", Static).update(f"Environments in [b]{self.gpuhop.images_dir}[/b]")
        self.query_one(LiveTable).focus()
        self.action_reload()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return None if action == "push" else True

    def action_reload(self) -> None:
        self.load()

    def action_push(self) -> None:
        self.notify(PUSH_UNAVAILABLE, severity="warning")

    @work(thread=True, exclusive=True, group="envs")
    def load(self) -> None:
        """Fingerprints read every build input: a thread, not the event loop."""
        try:
            rows = load_envs(self.gpuhop.images_dir)
        except OSError as exc:
            error = ClientError(f"cannot read {self.gpuhop.images_dir}: {exc.strerror or exc}")
            self.post_message(ApiFailed("environments", error))
            rows = []
        self.post_message(EnvsLoaded(tuple(rows)))

    @on(EnvsLoaded)
    def _loaded(self, message: EnvsLoaded) -> None:
        self.envs = message.envs
        self.query_one(LiveTable).sync(env_rows(message.envs))
        if not message.envs:
            self.query_one("#detail", Static).update(
                "[dim]no images/<name>/Dockerfile here; set GPUHOP_IMAGES to the directory[/dim]"
            )
        self._show_detail()

    @on(DataTable.RowHighlighted)
    def _show_detail(self) -> None:
        key = self.query_one(LiveTable).selected_key
        env = next((e for e in self.envs if e.name == key), None)
        if env is None:
            return
        lines = [f"[b]{env.name}[/b]  {env.fingerprint}"]
        if env.error:
            lines.append(f"[red]{env.error}[/red]")
        elif env.description:
            lines.append(env.description)
        self.query_one("#detail", Static).update("\n".join(lines))
