"""Wire models of the HTTP API (v1): what clients send and receive.

These are the contract: ``docs/openapi.json`` is generated from them and a test
keeps the two equal. Times are float seconds since the epoch (UTC), as in the
audit log. Conversions from the gateway's frozen dataclasses live here, at the
boundary, so routes stay short.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.adapters.storage import Scope, SessionRecord, Token, TokenState
from gateway.domain.audit.chain import AuditEvent, VerifyResult
from gateway.domain.models import Mode

ErrorCode = Literal[
    "invalid_request",
    "invalid_public_key",
    "token_missing",
    "token_unknown",
    "token_expired",
    "token_revoked",
    "user_unknown",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "session_not_live",
    "rate_limited",
    "body_too_large",
    "storage_unavailable",
    "internal_error",
    "bad_constraints",
    "unknown_dataset",
    "conflict",
    "config_managed",
    "host_unreachable",
]

_OUT = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
_IN = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class ErrorDetail(BaseModel):
    model_config = _OUT

    code: ErrorCode
    """Stable machine-readable code; see docs/api.md."""
    message: str
    """One line for people; wording may change."""


class ErrorBody(BaseModel):
    """Every error response: ``{"error": {"code": ..., "message": ...}}``."""

    model_config = _OUT

    error: ErrorDetail


class Health(BaseModel):
    model_config = _OUT

    status: Literal["ok"] = "ok"
    version: str


class Ready(BaseModel):
    """``GET /v1/ready``: 200 with ``ready``, or 503 with ``unready`` and why."""

    model_config = _OUT

    status: Literal["ready", "unready"]
    reason: Literal["draining", "keys_missing", "storage_unreachable"] | None = None
    """Why not ready (stable code); None when ready."""
    message: str = ""
    """One line for people; wording may change."""
    version: str


class Me(BaseModel):
    """Who the bearer token speaks for."""

    model_config = _OUT

    user: str
    scope: Scope
    token_id: str
    token_name: str
    expires_at: float
    in_inventory: bool
    """Whether the user is declared in the gateway's inventory (needed for SSH access)."""
    team: str
    roles: list[str]
    accounts: list[str]
    """Remote accounts the user's roles allow; certificates carry them as principals."""


class GatewayInfo(BaseModel):
    """How to reach the gateway over SSH and which keys to trust there."""

    model_config = _OUT

    version: str
    ssh_host: str
    """The address the SSH front listens on; a wildcard (``0.0.0.0``, ``::``) means
    "the API's own host name"."""
    ssh_port: int
    host_key: str
    """The gateway's SSH host key (``ssh-ed25519 AAAA...``), for known_hosts."""
    gateway_keys: list[str]
    """Every key to trust for the gateway: ``host_key`` first, then a staged next key
    that will replace it (rotation); known_hosts should list them all."""
    host_ca_key: str
    """The CA that signs the host certificates of recorded ``ssh -J`` sessions, for a
    ``@cert-authority`` known_hosts line."""
    host_keys: dict[str, str]
    """Each inventory host's pinned SSH host key by name: what a passthrough jump
    (end to end to the host's own sshd) must find in known_hosts."""


HostStatus = Literal["up", "down", "unknown"]


class HostOut(BaseModel):
    model_config = _OUT

    name: str
    region: str
    country: str
    address: str
    port: int
    status: HostStatus
    """``unknown`` until live probing reports on the host."""
    gpu_model: str
    gpus_total: int
    gpus_free: int
    """GPUs not leased; equal to ``gpus_total`` until live inventory reports."""
    price_per_gpu_hour: float
    egress_per_gb: float
    residency: list[str]
    labels: dict[str, str]
    rtt_ms: float | None
    """Gateway-to-host round trip (median of recent probes); null until measured."""
    rtt_p95_ms: float | None = None
    """95th percentile of recent round trips."""
    rtt_history: list[float | None] = []
    """Recent round trips, oldest first (null = a missed probe), for sparklines."""
    utilization_pct: float | None = None
    """Mean GPU utilisation reported by nvidia-smi."""
    allowed: bool
    """Whether the caller may start a session there now: a role grants it in some mode,
    and the caller's (and team's) budget is not spent."""
    reason: str = Field(default="", exclude_if=lambda reason: not reason)
    """Why not, when ``allowed`` is false (the policy's or the budget's reason); absent
    while it is allowed."""


class SessionOut(BaseModel):
    model_config = _OUT

    id: str
    user: str
    host: str
    region: str
    mode: Mode
    account: str
    source: str
    started_at: float
    ended_at: float | None
    live: bool
    duration_s: float
    """Elapsed so far for a live session, total for an ended one."""
    bytes_up: int
    bytes_down: int
    exit_status: int | None
    error: str | None
    gpus: int
    cost_usd: float | None

    @classmethod
    def of(cls, record: SessionRecord, now: float) -> SessionOut:
        end = now if record.ended_at is None else record.ended_at
        return cls(
            id=record.id,
            user=record.user,
            host=record.host,
            region=record.region,
            mode=record.mode,
            account=record.account,
            source=record.source,
            started_at=record.started_at,
            ended_at=record.ended_at,
            live=record.live,
            duration_s=max(0.0, end - record.started_at),
            bytes_up=record.bytes_up,
            bytes_down=record.bytes_down,
            exit_status=record.exit_status,
            error=record.error,
            gpus=record.gpus,
            cost_usd=record.cost_usd,
        )


class SessionPage(BaseModel):
    model_config = _OUT

    sessions: list[SessionOut]
    """Newest first."""
    next_after: str | None
    """Pass as ``after`` for the next page; null on the last page."""


class KillResult(BaseModel):
    model_config = _OUT

    session_id: str
    killed: bool


class AuditEventOut(BaseModel):
    model_config = _OUT

    id: int
    ts: float
    kind: str
    actor: str
    data: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            id=event.id,
            ts=event.ts,
            kind=event.kind,
            actor=event.actor,
            data=_thaw(event.data),
            prev_hash=event.prev_hash,
            hash=event.hash,
        )


def _thaw(value: Any) -> Any:
    """Plain JSON values from the audit log's read-only mappings and tuples."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "items"):
        return {str(k): _thaw(v) for k, v in value.items()}
    return [_thaw(v) for v in value]


class AuditPage(BaseModel):
    model_config = _OUT

    events: list[AuditEventOut]
    """Oldest first."""
    next_after_id: int | None
    """Pass as ``after_id`` for the next page; null when this page was not full."""


class AuditVerify(BaseModel):
    model_config = _OUT

    ok: bool
    count: int
    first_broken: int | None
    reason: str

    @classmethod
    def of(cls, result: VerifyResult) -> AuditVerify:
        return cls(
            ok=result.ok,
            count=result.count,
            first_broken=result.first_broken,
            reason=result.reason,
        )


class CertificateRequest(BaseModel):
    model_config = _IN

    public_key: Annotated[str, Field(min_length=1, max_length=16384)]
    """The caller's OpenSSH public key, one line (``ssh-ed25519 AAAA... comment``)."""
    validity_s: Annotated[int | None, Field(ge=60)] = None
    """Requested lifetime; the gateway's default when null, capped at its maximum."""


class CertificateOut(BaseModel):
    model_config = _OUT

    certificate: str
    """One OpenSSH certificate line, to save as ``<key>-cert.pub``."""
    key_id: str
    principals: list[str]
    valid_after: int
    valid_before: int
    ca_public_key: str
    """The user CA that signed it (what hosts trust via TrustedUserCAKeys)."""


TOKEN_TTL_DEFAULT_S = 30 * 86400
TOKEN_TTL_MAX_S = 365 * 86400


class TokenCreate(BaseModel):
    model_config = _IN

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
    scope: Scope = Scope.USER
    ttl_s: Annotated[int, Field(ge=60, le=TOKEN_TTL_MAX_S)] = TOKEN_TTL_DEFAULT_S
    user: Annotated[str | None, Field(min_length=1, max_length=64)] = None
    """Whom the token is for; only admin tokens may name someone else. Default: the caller."""


class TokenOut(BaseModel):
    model_config = _OUT

    id: str
    user: str
    scope: Scope
    name: str
    state: TokenState
    created_at: float
    expires_at: float
    revoked_at: float | None
    last_used_at: float | None
    parent_id: str | None = None
    """The token this one was minted with (revoking it revokes this); None: an operator's."""

    @classmethod
    def of(cls, token: Token, now: float) -> TokenOut:
        return cls(
            id=token.id,
            user=token.user,
            scope=token.scope,
            name=token.name,
            state=token.state(now),
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
            last_used_at=token.last_used_at,
            parent_id=token.parent_id,
        )


class TokenCreated(BaseModel):
    model_config = _OUT

    token: TokenOut
    secret: str
    """The bearer secret (``gph_...``). Shown this once; the gateway keeps only its hash."""


class TokenList(BaseModel):
    model_config = _OUT

    tokens: list[TokenOut]
