"""Environments: the ``images/`` directories, their fingerprints, per-host status, push.

Per host, an environment is in sync (the host's ``gpuhop/NAME`` carries this
fingerprint), drifted (another one) or missing; ``p`` pushes it to the hosts
picked, with a live progress bar, through the gateway (``client.tui.envsync``).
Both compare with and send from the local Docker engine: without one the screen
says so instead of showing states it would have to guess.
"""

from __future__ import annotations

import contextlib

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, ProgressBar, Static

from client.envs.sync import Progress
from client.errors import ClientError
from client.tui.envs import UNKNOWN, EnvRow, load_envs
from client.tui.envsync import host_states
from client.tui.format import clip, env_state, size
from client.tui.messages import (
    ApiFailed,
    EnvsLoaded,
    EnvStatusLoaded,
    PushDone,
    PushProgress,
)
from client.tui.screens.base import GpuhopScreen
from client.tui.screens.dialogs import HostPicker
from client.tui.widgets.table import Cell, Column, LiveTable

ENV_COLUMNS = (
    Column("name", "Environment", 14),
    Column("gpus", "GPUs", 4),
    Column("fingerprint", "Fingerprint", 19),
    Column("hosts", "In sync", 8),
    Column("description", "Description", 21),
)
PUSH_HINT = "p pushes the selected environment: only the layers a host lacks travel."
NO_ENGINE = (
    "[yellow]No local Docker engine[/yellow]: {why}. Host status and push need it "
    "(start Docker or set DOCKER_HOST, then r)."
)
PUSHED = {"loaded": "loaded", "tagged": "tagged (it had the image)", "current": "already there"}


def env_rows(
    envs: tuple[EnvRow, ...], states: dict[str, dict[str, str]] | None = None
) -> list[tuple[str, list[Cell]]]:
    """One row per environment; "In sync" counts the hosts that have exactly this build."""
    rows: list[tuple[str, list[Cell]]] = []
    for e in envs:
        per_host = (states or {}).get(e.name)
        if not per_host:
            synced: Text = Text(UNKNOWN, style="dim")
        else:
            n = sum(1 for st in per_host.values() if st == "in sync")
            style = "green" if n == len(per_host) else "yellow" if n else "red"
            synced = Text(f"{n}/{len(per_host)}", style=style)
        rows.append(
            (
                e.name,
                [
                    Text(e.name, style="bold"),
                    str(e.gpus),
                    Text(clip(e.fingerprint, 19), style="red" if e.error else "cyan"),
                    synced,
                    clip(e.description or e.error, 21),
                ],
            )
        )
    return rows


class EnvironmentsScreen(GpuhopScreen):
    MODE = "environments"
    BINDINGS = [
        Binding("r", "reload", "Reload"),
        Binding("p", "push", "Push"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.envs: tuple[EnvRow, ...] = ()
        self.states: dict[str, dict[str, str]] = {}
        self.host_errors: dict[str, str] = {}
        self.status_loaded = False
        self.engine_error = ""
        self.pushing = ""
        self.last_push: PushDone | None = None
        self.progress_updates = 0

    def compose(self) -> ComposeResult:
        yield self.nav()
        yield Static(id="where")
        yield LiveTable(ENV_COLUMNS, unique="name", id="envs")
        yield Static(id="detail")
        yield ProgressBar(id="push-progress", show_eta=False)
        yield Static(f"[dim]{PUSH_HINT}[/dim]", id="push-note")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#where", Static).update(f"Environments in [b]{self.gpuhop.images_dir}[/b]")
        self.query_one("#push-progress", ProgressBar).display = False
        self.query_one(LiveTable).focus()
        self.action_reload()

    def action_reload(self) -> None:
        self.load()

    def action_push(self) -> None:
        key = self.query_one(LiveTable).selected_key
        env = next((e for e in self.envs if e.name == key), None)
        if env is None:
            self.notify("no environment selected", severity="warning")
            return
        if self.pushing:
            self.notify(f"already pushing {self.pushing}", severity="warning")
            return
        if self.engine_error:
            self.notify(f"cannot push: {self.engine_error}", severity="warning")
            return
        if not self.status_loaded:
            self.notify("host status is not known yet; try again in a moment", severity="warning")
            return
        per_host = self.states.get(env.name, {})
        hosts = [(h, per_host.get(h, UNKNOWN)) for h in sorted(per_host)]
        if not hosts:
            self.notify("no hosts to push to", severity="warning")
            return
        chosen = {h for h, st in hosts if st in ("drift", "missing")}

        def picked(targets: list[str] | None) -> None:
            if targets:
                self.push(env.name, targets)

        self.app.push_screen(HostPicker(env.name, hosts, chosen), picked)

    @work(thread=True, exclusive=True, group="envs")
    def load(self) -> None:
        """Fingerprints read every build input, and the engine check may wait on a socket:
        a thread, not the event loop."""
        resolve = None
        engine_error = ""
        with contextlib.suppress(ClientError):  # not logged in: pinned bases still work
            backend = self.gpuhop.env_backend()
            engine_error = backend.engine_error()
            resolve = None if engine_error else backend.resolve_base
        try:
            rows = load_envs(self.gpuhop.images_dir, resolve)
        except OSError as exc:
            error = ClientError(f"cannot read {self.gpuhop.images_dir}: {exc.strerror or exc}")
            self.post_message(ApiFailed("environments", error))
            rows = []
        self.post_message(EnvsLoaded(tuple(rows), engine_error))

    @work(exclusive=True, group="env-status")
    async def load_status(self, envs: tuple[EnvRow, ...]) -> None:
        """Ask the gateway what every host holds; compare with the fingerprints here."""
        data = self.gpuhop.data
        if data is None or not envs:
            return
        hosts = await self.call("hosts", data.hosts())
        if hosts is None:
            return
        try:
            backend = self.gpuhop.env_backend()
        except ClientError as exc:
            self.query_one("#push-note", Static).update(f"[dim]Host status: {exc}[/dim]")
            return
        remote = await self.call("host images", backend.host_images([h.name for h in hosts]))
        if remote is None:
            return
        errors = {h: info.error for h, info in remote.items() if info.error}
        states = {
            k: {h: str(st) for h, st in v.items()} for k, v in host_states(envs, remote).items()
        }
        self.post_message(EnvStatusLoaded(states, errors))

    @work(exclusive=True, group="env-push")
    async def push(self, name: str, hosts: list[str]) -> None:
        try:
            backend = self.gpuhop.env_backend()
        except ClientError as exc:
            self.post_message(ApiFailed("push", exc))
            return
        self.pushing = name
        bar = self.query_one("#push-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self.query_one("#push-note", Static).update(f"Pushing [b]{name}[/b] to {', '.join(hosts)}…")

        def progress(p: Progress) -> None:  # from the event loop or a docker thread
            self.post_message(PushProgress(p.sent, p.total, p.rate, p.done))

        try:
            report = await self.call("push", backend.push(name, hosts, progress))
        finally:
            self.pushing = ""
        if report is None:
            bar.display = False
            self.query_one("#push-note", Static).update(f"[red]Push of {name} failed[/red]")
            return
        results = tuple((t.target, t.status, t.error or "") for t in report.targets)
        self.post_message(PushDone(name, results, {t.target: t.bytes_sent for t in report.targets}))

    @on(EnvsLoaded)
    def _loaded(self, message: EnvsLoaded) -> None:
        self.envs = message.envs
        self.engine_error = message.engine_error
        note = self.query_one("#push-note", Static)
        if self.engine_error:  # states against guessed fingerprints would mislead
            self.states, self.host_errors, self.status_loaded = {}, {}, False
            note.update(NO_ENGINE.format(why=escape(self.engine_error)))
        elif not self.pushing:
            note.update(f"[dim]{PUSH_HINT}[/dim]")
        self.query_one(LiveTable).sync(env_rows(message.envs, self.states))
        if not message.envs:
            self.query_one("#detail", Static).update(
                "[dim]no images/<name>/Dockerfile here; set GPUHOP_IMAGES to the directory[/dim]"
            )
        self._show_detail()
        if not self.engine_error:
            self.load_status(message.envs)

    @on(EnvStatusLoaded)
    def _status(self, message: EnvStatusLoaded) -> None:
        self.states, self.host_errors = message.states, message.errors
        self.status_loaded = True
        self.query_one(LiveTable).sync(env_rows(self.envs, self.states))
        self._show_detail()

    @on(PushProgress)
    def _progress(self, message: PushProgress) -> None:
        self.progress_updates += 1
        bar = self.query_one("#push-progress", ProgressBar)
        total = max(message.total or 0, message.sent) or None
        bar.update(total=total, progress=message.sent)
        rate = f"{size(message.rate)}/s" if message.rate else ""
        self.query_one("#push-note", Static).update(
            f"Pushing [b]{self.pushing}[/b]: {size(message.sent)}"
            + (f" of ~{size(message.total)}" if message.total else "")
            + (f", {rate}" if rate else "")
        )

    @on(PushDone)
    def _pushed(self, message: PushDone) -> None:
        self.last_push = message
        self.query_one("#push-progress", ProgressBar).display = False
        good = [h for h, status, _ in message.results if status in PUSHED]
        summary = f"Pushed [b]{message.env}[/b]: {len(good)}/{len(message.results)} hosts"
        self.query_one("#push-note", Static).update(summary)
        for host, status, error in message.results:
            if host in good:
                sent = message.sent.get(host, 0)
                self.notify(f"{message.env} on {host}: {PUSHED[status]}, {size(sent)} sent")
            else:
                self.notify(f"{message.env} on {host}: {error or status}", severity="error")
        self.load_status(self.envs)

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
        per_host = self.states.get(env.name, {})
        if per_host:
            lines.append("  ".join(f"{h} {env_state(st)}" for h, st in sorted(per_host.items())))
        self.query_one("#detail", Static).update("\n".join(lines))
