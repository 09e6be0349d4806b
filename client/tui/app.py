"""``gpuhop`` with no arguments: the terminal UI.

The App owns the connection (``AsyncClient``), who the token is (``me``),
the link status shown on every screen, the shell hand-off, and the one place
where errors become notifications (``ApiFailed``). Each screen owns the workers
that poll what it shows; widgets only draw what they are given.

    GpuhopApp(gateway="http://127.0.0.1:8080", token="gph_...").run()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from textual import on, work
from textual.app import App, SuspendNotSupported, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen

from client.api.clients import AsyncClient
from client.api.models import Me
from client.errors import (
    ClientError,
    CredentialsError,
    GatewayUnavailable,
    NoKeyring,
    NotLoggedIn,
    TokenRejected,
)
from client.settings import is_loopback_url, normalize_url
from client.tui.envs import env_names, images_dir
from client.tui.envsync import EnvBackend
from client.tui.format import RttWindow
from client.tui.messages import ApiFailed, ApiRecovered, MeLoaded, ShellSummary
from client.tui.screens.audit import AuditScreen
from client.tui.screens.dialogs import HelpScreen, SummaryScreen
from client.tui.screens.environments import EnvironmentsScreen
from client.tui.screens.firstrun import FirstRunScreen
from client.tui.screens.hosts import HostsScreen
from client.tui.screens.placement import PlacementScreen
from client.tui.screens.sessions import SessionsScreen
from client.tui.shell import (
    ShellCommand,
    ShellRequest,
    pick_session,
    shell_command,
)
from client.tui.widgets.navbar import Status

ShellRunner = Callable[[ShellCommand], int]
SUMMARY_WAIT_S = 10.0
REPEAT_NOTICE_S = 30.0


class GpuhopApp(App[None]):
    """The gpuhop terminal UI."""

    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live elsewhere
    TITLE = "gpuhop"
    MODES = {
        "hosts": HostsScreen,
        "sessions": SessionsScreen,
        "placement": PlacementScreen,
        "environments": EnvironmentsScreen,
        "audit": AuditScreen,
    }
    DEFAULT_MODE = "hosts"
    status: reactive[Status] = reactive(Status(), init=False)
    BINDINGS = [
        Binding("1", "switch_mode('hosts')", "Hosts", show=False),
        Binding("2", "switch_mode('sessions')", "Sessions", show=False),
        Binding("3", "switch_mode('placement')", "Placement", show=False),
        Binding("4", "switch_mode('environments')", "Environments", show=False),
        Binding("5", "switch_mode('audit')", "Audit", show=False),
        Binding("question_mark,f1", "help", "Help"),
        Binding("ctrl+t", "toggle_theme", "Light/dark", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        gateway: str | None = None,
        token: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        refresh_s: float = 1.0,
        images: Path | None = None,
        shell_runner: ShellRunner | None = None,
        env_backend: EnvBackend | None = None,
        theme: str = "textual-dark",
    ) -> None:
        super().__init__()
        self.clock = clock
        self.refresh_s = refresh_s
        self.images_dir = images_dir(images)
        self.rtt = RttWindow()
        self.me: Me | None = None
        self.env_choices: list[str] = []
        self.theme = theme
        self._transport = transport
        self._timer = timer
        self._shell_runner = shell_runner or self._run_in_terminal
        self._env_backend = env_backend
        self._last_notice: tuple[str, float] = ("", 0.0)
        self.data: AsyncClient | None = None
        self._login_error: ClientError | None = None
        url = gateway or os.environ.get("GPUHOP_GATEWAY", "").strip() or None
        secret = token or os.environ.get("GPUHOP_TOKEN", "").strip() or None
        self._given = (url, secret)
        if url and secret:
            try:
                self.data = self._client(url, secret)
            except ClientError as exc:
                self._login_error = exc

    def env_backend(self) -> EnvBackend:
        """The gateway (and local Docker) for environment status and pushes, made on first
        use from ``gpuhop login``; a ``ClientError`` says what is missing."""
        if self._env_backend is None:
            from client.tui.envsync import default_backend

            self._env_backend = default_backend()
        return self._env_backend

    # -- connection --

    def _client(self, url: str, token: str) -> AsyncClient:
        """The API client (no I/O yet); a malformed URL is a ``UsageError``."""
        return AsyncClient(normalize_url(url), token, transport=self._transport, timer=self._timer)

    def on_mount(self) -> None:
        if self.data is not None:
            self._connected()
        elif self._login_error is not None:
            self.post_message(ApiFailed("login", self._login_error))
        else:
            self.resolve_login(*self._given)
        self.load_env_choices()

    def _connected(self) -> None:
        assert self.data is not None
        url = self.data.base_url
        if url.startswith("http://") and not is_loopback_url(url):
            self.notify(f"{url} is plain HTTP: the token crosses unencrypted.", severity="warning")
        self.set_status(gateway=url, state="connecting")
        self.load_me()

    @work(thread=True, exclusive=True, group="login")
    def resolve_login(self, url: str | None, token: str | None) -> None:
        """The login stored by ``gpuhop login`` (OS keyring: blocking, so a thread)."""
        from client.credentials import resolve
        from client.settings import load_settings

        try:
            creds = resolve(load_settings())
            if url and token is None and normalize_url(url) != creds.url:
                raise NotLoggedIn(
                    f"--gateway is {url} but the stored login is for {creds.url}; "
                    "give its token too (GPUHOP_TOKEN), or log in to that gateway"
                )
        except ClientError as exc:
            self.post_message(ApiFailed("login", exc))
            return
        self.call_from_thread(self._login, url or creds.url, token or creds.token.get())

    def _login(self, url: str, token: str) -> None:
        try:
            self.data = self._client(url, token)
        except ClientError as exc:
            self.post_message(ApiFailed("login", exc))
            return
        self._connected()

    @work(exclusive=True, group="me")
    async def load_me(self) -> None:
        data = self.data
        if data is None:
            return
        try:
            me = await data.me()
        except ClientError as exc:
            self.post_message(ApiFailed("who am I", exc))
            return
        self.post_message(MeLoaded(me))

    @on(MeLoaded)
    def _me_loaded(self, message: MeLoaded) -> None:
        self.me = message.me
        self.set_status(user=message.me.user, scope=message.me.scope, state="live")

    @work(thread=True, exclusive=True, group="envs")
    def load_env_choices(self) -> None:
        names = env_names(self.images_dir)
        self.call_from_thread(setattr, self, "env_choices", names)

    async def on_unmount(self) -> None:
        if self.data is not None:
            await self.data.aclose()

    def pace(self) -> float:
        """Seconds until the next poll, so polls start every ``refresh_s`` however long
        each round trip took (about 1 Hz, not 1 Hz minus the latency)."""
        period = self.refresh_s
        return period - (time.monotonic() % period)

    # -- status and errors --

    def set_status(self, **changes: Any) -> None:
        """Every screen's NavBar watches ``status``."""
        self.status = replace(self.status, **changes)

    @on(ApiFailed)
    def _api_failed(self, message: ApiFailed) -> None:
        err = message.error
        if message.what == "login" and isinstance(err, NotLoggedIn | NoKeyring):
            self.set_status(state="not logged in")
            if not isinstance(self.screen, FirstRunScreen):
                self.push_screen(FirstRunScreen(str(err)), self._first_run_done)
            self.notice(err, message.what)
            return
        if isinstance(err, TokenRejected):
            self.set_status(state="token rejected")
        elif isinstance(err, GatewayUnavailable | CredentialsError):
            self.set_status(state="offline")
        self.notice(err, message.what)

    def _first_run_done(self, again: bool | None) -> None:
        if again:
            self.resolve_login(*self._given)

    @on(ApiRecovered)
    def _api_recovered(self) -> None:
        if self.status.state in ("offline", "token rejected"):
            self.notify("The gateway answers again.", title="Reconnected")
        if self.status.state != "live":
            self.set_status(state="live")
        if self.me is None:
            self.load_me()

    def notice(self, err: ClientError, what: str = "") -> None:
        """One notification per distinct error; a repeat within 30 s stays quiet."""
        key = f"{type(err).__name__}:{err}"
        now = time.monotonic()
        last, at = self._last_notice
        if key == last and now - at < REPEAT_NOTICE_S:
            return
        self._last_notice = (key, now)
        title = {
            "TokenRejected": "Token rejected",
            "GatewayUnavailable": "Gateway unreachable",
            "PolicyDenied": "Denied",
            "NotLoggedIn": "Not logged in",
            "NoKeyring": "Not logged in",
        }.get(type(err).__name__, what.capitalize() or "Error")
        self.notify(str(err), title=title, severity="error", timeout=8)

    # -- shell hand-off --

    def open_shell(self, request: ShellRequest) -> None:
        """Suspend, run the shell in the real terminal, then show the session's summary."""
        command = shell_command(request, os.environ)
        since = self.clock()
        code = self._shell_runner(command)
        if code < 0:
            return
        self.summarize_shell(request, since, code)

    def _run_in_terminal(self, command: ShellCommand) -> int:
        env = {**os.environ, **command.env}
        try:
            with self.suspend():
                print(f"gpuhop: {' '.join(command.argv)}  (exit the shell to come back)")
                code = subprocess.call(list(command.argv), env=env)
                if _failed_to_connect(code):  # keep ssh's or gpuhop's error on screen
                    with contextlib.suppress(EOFError):
                        input(f"gpuhop: exit status {code}; press Enter to return ")
                return code
        except SuspendNotSupported:
            self.notice(ClientError("this terminal cannot hand over to a shell"), "shell")
        except OSError as exc:
            self.notice(ClientError(f"cannot run {command.argv[0]}: {exc}"), "shell")
        return -1

    @work(exclusive=True, group="summary")
    async def summarize_shell(self, request: ShellRequest, since: float, code: int) -> None:
        """Wait (briefly) for the gateway to close the session's record and meter it."""
        data, me = self.data, self.me
        found = None
        deadline = time.monotonic() + SUMMARY_WAIT_S
        while data is not None and me is not None and time.monotonic() < deadline:
            try:
                sessions = await data.sessions(user=me.user, limit=20)
                found = pick_session(sessions, request.host, since)
            except ClientError as exc:
                self.post_message(ApiFailed("session summary", exc))
                break
            if found is not None and not found.live and found.cost_usd is not None:
                break
            await asyncio.sleep(0.25)
        self.post_message(ShellSummary(request.host, code, found, request.gpus))

    @on(ShellSummary)
    def _shell_summary(self, message: ShellSummary) -> None:
        self.push_screen(
            SummaryScreen(message.host, message.exit_code, message.session, message.gpus_asked)
        )

    # -- keys and commands --

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield SystemCommand("Hosts", "Every host, live latency and price", self._mode("hosts"))
        yield SystemCommand("Sessions", "Live sessions and running cost", self._mode("sessions"))
        yield SystemCommand("Placement", "Where a job should run, and why", self._mode("placement"))
        yield SystemCommand("Environments", "images/ and fingerprints", self._mode("environments"))
        yield SystemCommand("Audit", "Events and recordings (admins)", self._mode("audit"))
        yield SystemCommand("Light/dark theme", "Switch the colour theme", self.action_toggle_theme)
        yield SystemCommand("Help", "Every key on every screen", self.action_help)
        yield from super().get_system_commands(screen)

    def _mode(self, mode: str) -> Callable[[], object]:
        return lambda: self.switch_mode(mode)


def _failed_to_connect(code: int) -> bool:
    """ssh's own failures (255) and gpuhop's (sysexits 64-78), not the remote shell's."""
    return code == 255 or 64 <= code <= 78
