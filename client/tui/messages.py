"""What workers tell screens: small dataclass messages, the only way data enters widgets.

Workers (owned by the App or a Screen) do the I/O and post one of these; the
Screen handles it with ``@on`` and hands plain values to its widgets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message

from client.api.models import AuditPage, Golden, HostView, Me, Placement, SessionView
from client.errors import ClientError
from client.tui.cast import Cast
from client.tui.envs import EnvRow


@dataclass
class MeLoaded(Message):
    me: Me


@dataclass
class HostsLoaded(Message):
    hosts: tuple[HostView, ...]
    client_rtt_ms: float | None
    at: float


@dataclass
class SessionsLoaded(Message):
    sessions: tuple[SessionView, ...]
    hosts: tuple[HostView, ...]
    client_rtt_ms: float | None
    at: float


@dataclass
class SessionKilled(Message):
    session_id: str


@dataclass
class PlacementLoaded(Message):
    placement: Placement


@dataclass
class EnvStatusLoaded(Message):
    """Per environment, per host: in sync / drift / missing / error (and the errors)."""

    states: dict[str, dict[str, str]]
    errors: dict[str, str]


@dataclass
class PushProgress(Message):
    sent: int
    total: int | None
    rate: float
    done: bool


@dataclass
class PushDone(Message):
    env: str
    results: tuple[tuple[str, str, str], ...]  # (host, status, error)
    sent: dict[str, int] = field(default_factory=dict)
    """Bytes each host received."""


@dataclass
class GoldenLoaded(Message):
    golden: Golden


@dataclass
class AuditLoaded(Message):
    page: AuditPage
    append: bool


@dataclass
class RecordingLoaded(Message):
    session_id: str
    cast: Cast


@dataclass
class EnvsLoaded(Message):
    envs: tuple[EnvRow, ...]
    engine_error: str = ""
    """Why the local Docker engine cannot be used ("" when it can)."""


@dataclass
class ShellSummary(Message):
    """A shell opened from the Hosts screen has ended; ``session`` is its record."""

    host: str
    exit_code: int
    session: SessionView | None
    gpus_asked: int = 0


@dataclass
class ApiFailed(Message):
    """A worker's call failed; the App shows it once as a notification."""

    what: str
    error: ClientError


@dataclass
class ApiRecovered(Message):
    """A call succeeded after failures: the App clears its offline state."""
