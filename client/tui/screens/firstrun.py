"""The screen a first run shows: no login yet, so what to do instead of an empty table."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

STEPS = """\
[b]To use a gateway[/b]
  gpuhop login https://GATEWAY:8080
      asks for the API token your admin gave you (kept in the OS keyring)
  or set GPUHOP_GATEWAY and GPUHOP_TOKEN (CI, machines without a keyring)

[b]To try gpuhop on this machine first[/b]
  gpuhop demo
      a local gateway in front of three simulated GPU regions

Then run gpuhop again, or press r here to look for the login once more."""


class FirstRunScreen(Screen[bool]):
    """Shown instead of the hosts table when there is no login; dismissed with True to
    look for it again (r), the app quits on q."""

    BINDINGS = [
        Binding("r", "dismiss(True)", "Look again"),
        Binding("q", "app.quit", "Quit"),
    ]
    DEFAULT_CSS = """
    FirstRunScreen #first-run { padding: 1 2; }
    FirstRunScreen .reason { color: $warning; margin-bottom: 1; }
    """

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="first-run"):
            yield Static("[b]Welcome to gpuhop[/b]")
            yield Static(escape(self.reason), classes="reason")
            yield Static(STEPS)
        yield Footer()
