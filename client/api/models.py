"""What the client reads from the gateway's API: frozen dataclasses, one per response.

Each names only the fields the client uses; unknown fields are ignored when a
response is parsed (``client.api.base``), so a newer gateway can add fields
without breaking an older client. A field with a default is one the document
marks optional (or one the TUI builds by hand in tests); every other field is
required, and tests/unit/test_client_api.py checks each against
``docs/openapi.json``. Pure data: no httpx, no pydantic here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Me:
    """``GET /v1/me``: whom the token speaks for."""

    user: str
    scope: Literal["user", "ci", "admin"]
    token_id: str = ""
    expires_at: float = 0.0
    team: str = ""
    roles: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    in_inventory: bool = True

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"


@dataclass(frozen=True)
class HostView:
    """One entry of ``GET /v1/hosts``."""

    name: str
    region: str
    status: Literal["up", "down", "unknown"]
    gpu_model: str
    gpus_total: int
    gpus_free: int
    price_per_gpu_hour: float
    rtt_ms: float | None
    allowed: bool
    country: str = ""
    egress_per_gb: float = 0.0
    rtt_p95_ms: float | None = None
    rtt_history: tuple[float | None, ...] = ()
    utilization_pct: float | None = None
    residency: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    reason: str = ""  # why not, when not allowed: the policy's or a spent budget's


@dataclass(frozen=True)
class GatewayInfo:
    """``GET /v1/gateway``: where the SSH front is and which keys to pin."""

    version: str
    ssh_host: str
    ssh_port: int
    host_key: str
    host_ca_key: str
    host_keys: dict[str, str]
    gateway_keys: tuple[str, ...] = ()  # host_key, then a staged next key (older gateways: none)


@dataclass(frozen=True)
class Certificate:
    """``POST /v1/certificates``: a signed OpenSSH user certificate."""

    certificate: str
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int


@dataclass(frozen=True)
class SessionView:
    """One session record of ``GET /v1/sessions``; ``cost_usd`` runs while live."""

    id: str
    user: str
    host: str
    region: str
    mode: str
    started_at: float
    live: bool
    duration_s: float
    gpus: int = 0
    cost_usd: float | None = None
    ended_at: float | None = None
    account: str = ""
    source: str = ""
    bytes_up: int = 0
    bytes_down: int = 0
    exit_status: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class SessionPage:
    """``GET /v1/sessions``: newest first."""

    sessions: tuple[SessionView, ...]


@dataclass(frozen=True)
class Ranked:
    """One host the gateway's ranking lets the job run on, best first."""

    rank: int
    name: str
    region: str
    score: float
    expected_cost: float
    currency: str
    price_per_gpu_hour: float
    latency_ms: float
    host_rtt_ms: float
    free_gpus: int
    gpu_model: str
    sync_s: float = 0.0
    sync_throughput_bps: float = 0.0
    sync_basis: str = ""


@dataclass(frozen=True)
class Excluded:
    """A host the job may not run on, and every reason why."""

    name: str
    region: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Placement:
    """``GET /v1/placement``: the gateway's ranking; the client never re-ranks it."""

    ranked: tuple[Ranked, ...]
    excluded: tuple[Excluded, ...]
    weights: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GoldenHost:
    """One candidate's golden-test run beside its prediction."""

    rank: int
    name: str
    region: str
    predicted_cost: float
    predicted_latency_ms: float
    currency: str
    status: str  # ok, failed, denied, no_gpus, timeout, unreachable
    exit_status: int | None
    seconds: float
    measured_cost: float
    price_per_gpu_hour: float = 0.0
    rtt_ms: float | None = None
    """The gateway's round trip to the host on the connection the job ran over."""
    gpus: tuple[int, ...] = ()
    output: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class Golden:
    """``POST /v1/placement/golden``: the command and each candidate's result."""

    command: str
    hosts: tuple[GoldenHost, ...]
    excluded: tuple[Excluded, ...] = ()


@dataclass(frozen=True)
class AuditEvent:
    id: int
    ts: float
    kind: str
    actor: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def session_id(self) -> str | None:
        value = self.data.get("session_id")
        return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class AuditPage:
    events: tuple[AuditEvent, ...]
    next_after_id: int | None


@dataclass(frozen=True)
class ErrorDetail:
    """The ``error`` member of every failed response's body."""

    code: str
    message: str


@dataclass(frozen=True)
class ErrorBody:
    error: ErrorDetail


@dataclass(frozen=True)
class Constraints:
    """A placement request (``gpuhop pick``, ``run --region any``, the TUI's form).

    ``None`` or empty means "the gateway's default" and is not sent.
    """

    gpus: int = 1
    gpu_model: str = ""
    max_latency_ms: float | None = None
    max_price: float | None = None
    data: str = ""
    client_rtt_ms: float = 0.0
    hours: float | None = None
    workdir_bytes: int | None = None
    workdir_files: int | None = None
    w_cost: float | None = None
    w_latency: float | None = None
    w_sync: float | None = None

    def fields(self) -> dict[str, str | int | float]:
        """The set fields, typed, for a JSON body (``POST /v1/placement/golden``)."""
        return {k: v for k, v in asdict(self).items() if v is not None and v != ""}

    def params(self) -> dict[str, str]:
        """The set fields as a query string (``GET /v1/placement``)."""
        return {k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in self.fields().items()}
