"""What the HTTP API needs from the gateway process, passed in once at start-up.

The API does not import the SSH front: live sessions reach it through two
callables, built from the front's session registry by :func:`session_controls`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway.adapters.keys import UserCA
from gateway.adapters.storage import SessionKillStore, SessionStore, TokenStore
from gateway.config.loader import Settings
from gateway.domain.inventory.hosts import Inventory
from gateway.domain.models import Mode
from gateway.edges.http.metrics import GatewayMetrics
from gateway.edges.http.readiness import Readiness
from gateway.ports import AuditStore
from gateway.services.golden import GoldenRunner
from gateway.services.live import LiveState
from gateway.services.runtime import RuntimeRef

if TYPE_CHECKING:
    from gateway.services.directory import DirectoryService


class LiveSession(Protocol):
    """A session running in this gateway process (the SSH front's ``ActiveSession``)."""

    @property
    def id(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def mode(self) -> Mode: ...
    @property
    def source(self) -> str: ...
    @property
    def started(self) -> float: ...


class ClosableSession(LiveSession, Protocol):
    @property
    def close(self) -> Callable[[], None]: ...


@dataclass(frozen=True)
class GatewayKeys:
    """The gateway's SSH host keys as known_hosts lines: the one in use first, then a
    staged next key."""

    lines: tuple[str, ...] = ()

    @property
    def current(self) -> str:
        return self.lines[0] if self.lines else ""


@dataclass(frozen=True)
class ApiContext:
    """Services the API routes use; one per gateway process."""

    settings: Settings
    runtime: RuntimeRef
    """The directory and the keys, read at each request: see :mod:`gateway.services.runtime`."""
    audit: AuditStore
    tokens: TokenStore
    sessions: SessionStore
    kill_session: Callable[[str], bool]
    """Close a live session in this process; False when it is not running here."""
    live_sessions: Callable[[], Sequence[LiveSession]]
    """Sessions running in this process now."""
    readiness: Readiness
    """What ``GET /v1/ready`` asks besides the keys: storage and draining."""
    kills: SessionKillStore
    """Kill requests to the replica running a session elsewhere."""
    live: LiveState
    """Probes, leases, running costs and placement."""
    golden: GoldenRunner
    """Runs the placement golden test on hosts."""
    directory: DirectoryService
    """Admin changes to users, keys, roles, ..."""
    clock: Callable[[], float] = time.time
    ssh_port: int = 0
    """The SSH front's bound port, for ``GET /v1/gateway``."""
    metrics: GatewayMetrics | None = None
    """Served at ``GET /metrics`` and timing every request; None: no ``/metrics``."""
    metrics_token_required: bool = True
    """``/metrics`` needs a ``metrics`` or ``admin`` API token; False opens it."""

    @property
    def inventory(self) -> Inventory:
        return self.runtime.current.inventory

    @property
    def user_ca(self) -> UserCA:
        return self.runtime.current.keys.user_ca

    @property
    def ssh_keys(self) -> GatewayKeys:
        """The gateway's SSH host keys (public lines), what clients pin in known_hosts."""
        return GatewayKeys(self.runtime.current.keys.host_key_lines)

    @property
    def host_ca_key(self) -> str:
        """The host CA's public line: clients trust recorded jumps with ``@cert-authority``."""
        return self.runtime.current.keys.host_ca_line


def session_controls(
    sessions: Mapping[str, ClosableSession],
) -> tuple[Callable[[str], bool], Callable[[], list[LiveSession]]]:
    """``kill_session`` and ``live_sessions`` over a live registry (``FrontContext.sessions``).

    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class S:
    ...     id: str
    ...     user: str = "alice"
    ...     host: str = "sg-1"
    ...     mode: Mode = Mode.PASSTHROUGH
    ...     source: str = ""
    ...     started: float = 0.0
    ...     closed: list[bool] = field(default_factory=list)
    ...     def close(self) -> None:
    ...         self.closed.append(True)
    >>> registry = {"s1": S("s1")}
    >>> kill, live = session_controls(registry)
    >>> [s.id for s in live()], kill("s1"), kill("nope"), registry["s1"].closed
    (['s1'], True, False, [True])
    """

    def kill(session_id: str) -> bool:
        session = sessions.get(session_id)
        if session is None:
            return False
        session.close()
        return True

    def live() -> list[LiveSession]:
        return list(sessions.values())

    return kill, live
