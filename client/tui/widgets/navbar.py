"""The top line: which screen is open, who is logged in, and whether the gateway answers."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from client.tui.format import ms

TABS = (
    ("hosts", "1", "Hosts"),
    ("sessions", "2", "Sessions"),
    ("placement", "3", "Placement"),
    ("environments", "4", "Envs"),
    ("audit", "5", "Audit"),
)


@dataclass(frozen=True)
class Status:
    """What the App knows about its link to the gateway."""

    gateway: str = ""
    user: str = ""
    scope: str = ""
    client_rtt_ms: float | None = None
    state: str = "connecting"
    """``connecting``, ``live``, ``offline`` or ``token rejected``."""


STATE_STYLE = {"live": "green", "connecting": "yellow", "offline": "bold red"}


class NavBar(Static):
    """Renders the tabs for ``current`` and the App's ``Status``; no I/O."""

    DEFAULT_CSS = "NavBar { height: 1; width: 1fr; }"

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current
        self.status = Status()

    def show(self, status: Status) -> None:
        self.status = status
        self.update(self._text())

    def on_mount(self) -> None:
        self.watch(self.app, "status", self.show, init=True)

    def _text(self) -> Text:
        left = Text()
        for mode, key, label in TABS:
            style = "reverse bold" if mode == self.current else ""
            left.append(f" {key} {label} ", style=style)
        s = self.status
        who = f"{s.user}·{s.scope}" if s.user else ""
        right = Text()
        if who:
            right.append(who + " ", style="bold")
        if s.client_rtt_ms is not None and s.state == "live":
            right.append(f"gw {ms(s.client_rtt_ms)} ", style="dim")
        right.append("● " + s.state, style=STATE_STYLE.get(s.state, "bold red"))
        width = max(0, self.size.width or 80)
        gap = max(1, width - left.cell_len - right.cell_len)
        return Text.assemble(left, " " * gap, right)

    def on_resize(self) -> None:
        self.update(self._text())
