"""Small modal screens: help, confirm, GPU count, environment picker, shell summary."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, SelectionList, Static
from textual.widgets.option_list import Option

from client.api.models import SessionView
from client.tui.format import DASH, cost, duration, env_state

HELP = """\
[b]gpuhop keys[/b]   (Esc closes)

[b]Anywhere[/b]
  1-5          Hosts, Sessions, Placement, Environments, Audit
  ctrl+p       command palette
  ctrl+t       light / dark theme
  ? or F1      this help
  q            quit

[b]Hosts[/b]
  Enter        open a shell on the host (the app steps aside until you exit)
  /            filter: name, region, GPU, country, 'free'; Esc clears
  s / S        next sort column (latency, price, free, name, region, util) / reverse
  g, +, -      GPUs for the next shell (GPUHOP_GPUS)
  e            environment for the next shell (GPUHOP_ENV, from images/)

[b]Sessions[/b]
  a            live only / recent too
  k            end the selected session (admins; asks first)

[b]Placement[/b]
  f            edit the constraints; Enter ranks, Esc leaves the form
  ctrl+r       rank again
  ctrl+g       golden test: a short job on the best 3 hosts, measured beside the prediction

[b]Environments[/b]
  r            read images/ and the hosts' images again
  p            push the selected environment to hosts (only missing layers travel)

[b]Audit[/b] (admins)
  /            filter by kind or actor; n next page; r reload
  Enter, p     replay the selected session's recording
  replay       space play/pause, + / - speed, left / right seek 5 s,
               r restart, End jump to the end, Esc back
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,f1,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(HELP)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class GpuPrompt(ModalScreen[int | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, current: int, maximum: int) -> None:
        super().__init__()
        self.current = current
        self.maximum = maximum

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"GPUs for the next shell (0-{self.maximum}):", classes="question")
            yield Input(str(self.current), type="integer", id="gpus")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        try:
            value = int(event.value or "0")
        except ValueError:
            self.notify("A whole number, please.", severity="warning")
            return
        self.dismiss(max(0, min(self.maximum, value)))


class EnvPicker(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, names: list[str], current: str) -> None:
        super().__init__()
        self.names = names
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Environment for the next shell:", classes="question")
            options = [Option("(host default)", id="")]
            options += [Option(name, id=name) for name in self.names]
            yield OptionList(*options, id="envs")
            if not self.names:
                yield Static("[dim]no images/<name>/Dockerfile found here[/dim]")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.current in self.names:
            options.highlighted = self.names.index(self.current) + 1

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id or "")


class HostPicker(ModalScreen[list[str] | None]):
    """Which hosts to push an environment to: space toggles, Enter pushes, Esc cancels."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("enter", "push", "Push", priority=True),
    ]

    def __init__(self, env: str, hosts: list[tuple[str, str]], chosen: set[str]) -> None:
        super().__init__()
        self.env, self.hosts, self.chosen = env, hosts, chosen

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(
                f"Push [b]{self.env}[/b] to (space toggles, Enter pushes):", classes="question"
            )
            yield SelectionList[str](
                *(
                    (f"{name}  {env_state(state)}", name, name in self.chosen)
                    for name, state in self.hosts
                ),
                id="targets",
            )

    def action_push(self) -> None:
        selected = list(self.query_one("#targets", SelectionList).selected)
        self.dismiss([str(h) for h in selected] or None)


class SummaryScreen(ModalScreen[None]):
    """After a shell: how long it ran, on how many GPUs, and what it cost."""

    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(
        self, host: str, exit_code: int, session: SessionView | None, gpus_asked: int = 0
    ) -> None:
        super().__init__()
        self.host = host
        self.exit_code = exit_code
        self.session = session
        self.gpus_asked = gpus_asked

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="summary"):
            yield Static(f"[b]Session on {self.host} ended[/b]", classes="question")
            yield Static(
                summary_text(self.session, self.exit_code, self.gpus_asked), id="summary-text"
            )
            yield Button("OK (Enter)", variant="primary", id="ok")

    @on(Button.Pressed)
    def _ok(self) -> None:
        self.dismiss()


def summary_text(session: SessionView | None, exit_code: int, gpus_asked: int = 0) -> str:
    if session is None:
        return (
            f"ssh exited with {exit_code}; the gateway has no record of a session "
            "(it may have been refused before it started)."
        )
    status = DASH if session.exit_status is None else str(session.exit_status)
    took = session.duration_s
    # A session that ran got the GPUs it asked for (a refused lease refuses the session);
    # the gateway's record may not carry the count yet.
    gpus = str(session.gpus or gpus_asked)
    lines = [
        f"Session   {session.id}",
        f"Duration  {took:.1f} s" if took < 60 else f"Duration  {duration(took)}",
        f"GPUs      {gpus}",
        f"Cost      {cost(session.cost_usd)}" + ("  (still running)" if session.live else ""),
        f"Exit      {status}",
    ]
    if session.error:
        lines.append(f"Error     {session.error}")
    return "\n".join(lines)
