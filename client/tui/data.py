"""The terminal UI's view of the gateway API: async calls returning frozen views.

The TUI polls several endpoints every second from Textual workers, so it needs
an ``httpx.AsyncClient`` and fields that ``client.api.GatewayApi`` (the CLI's
synchronous client) does not model: RTT history, utilisation, residency,
sessions, placement, audit and recordings. Responses are validated at this
boundary by pydantic straight into the frozen dataclasses below (unknown
fields are ignored, so a newer gateway does not break an older client).

Errors are translated here, once, into the ``client.errors`` tree, the same way
``client.api`` does it: transport failures, 429 and 5xx are
``GatewayUnavailable``; 401 is ``TokenRejected``; 403 is ``PolicyDenied``;
anything else is a ``ClientError``. Screens turn each into one notification.

    data = GatewayData("http://127.0.0.1:8080", "gph_...")
    hosts = await data.hosts()
    await data.aclose()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError

from client import __version__
from client.errors import ClientError, GatewayUnavailable, PolicyDenied, TokenRejected

T = TypeVar("T")


@dataclass(frozen=True)
class Me:
    user: str
    scope: Literal["user", "ci", "admin"]
    team: str = ""
    roles: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    in_inventory: bool = True

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"


@dataclass(frozen=True)
class HostView:
    """One row of ``GET /v1/hosts``."""

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
class Ranked:
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


@dataclass(frozen=True)
class Excluded:
    name: str
    region: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Placement:
    ranked: tuple[Ranked, ...]
    excluded: tuple[Excluded, ...]


@dataclass(frozen=True)
class Constraints:
    """The placement form's values; ``None``/empty means "no limit"."""

    gpus: int = 1
    gpu_model: str = ""
    max_latency_ms: float | None = None
    max_price: float | None = None
    data: str = ""
    client_rtt_ms: float = 0.0

    def params(self) -> dict[str, str]:
        out = {"gpus": str(self.gpus), "client_rtt_ms": f"{self.client_rtt_ms:.3f}"}
        if self.gpu_model:
            out["gpu_model"] = self.gpu_model
        if self.max_latency_ms is not None:
            out["max_latency_ms"] = f"{self.max_latency_ms:g}"
        if self.max_price is not None:
            out["max_price"] = f"{self.max_price:g}"
        if self.data:
            out["data"] = self.data
        return out


@dataclass(frozen=True)
class GoldenHost:
    """One candidate's golden-test run beside its prediction (``POST /v1/placement/golden``)."""

    rank: int
    name: str
    region: str
    predicted_cost: float
    predicted_latency_ms: float
    currency: str
    status: str
    exit_status: int | None
    seconds: float
    measured_cost: float
    rtt_ms: float | None = None
    """The gateway's round trip to the host on the connection the job ran over."""
    gpus: tuple[int, ...] = ()
    output: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class Golden:
    command: str
    hosts: tuple[GoldenHost, ...]


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
class _SessionPage:
    sessions: tuple[SessionView, ...]


_ME = TypeAdapter(Me)
_HOSTS = TypeAdapter(list[HostView])
_SESSIONS = TypeAdapter(_SessionPage)
_SESSION = TypeAdapter(SessionView)
_PLACEMENT = TypeAdapter(Placement)
_AUDIT = TypeAdapter(AuditPage)
_GOLDEN = TypeAdapter(Golden)
GOLDEN_TIMEOUT_S = 60.0


class GatewayData:
    """One gateway's API as the TUI uses it; one pooled async connection."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timer = timer
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"gpuhop-tui/{__version__}",
                "Accept": "application/json",
            },
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ping(self) -> float:
        """This client's round trip to the gateway, in ms (``GET /v1/health``)."""
        start = self._timer()
        await self._request("GET", "/v1/health")
        return (self._timer() - start) * 1000.0

    async def me(self) -> Me:
        return self._parse(_ME, await self._request("GET", "/v1/me"))

    async def hosts(self) -> list[HostView]:
        return self._parse(_HOSTS, await self._request("GET", "/v1/hosts"))

    async def sessions(
        self, *, live: bool | None = None, user: str | None = None, limit: int = 100
    ) -> list[SessionView]:
        """Newest first: the caller's own, or everyone's for an admin token."""
        params: dict[str, str] = {"limit": str(limit)}
        if live is not None:
            params["live"] = "true" if live else "false"
        if user is not None:
            params["user"] = user
        page = self._parse(_SESSIONS, await self._request("GET", "/v1/sessions", params=params))
        return list(page.sessions)

    async def session(self, session_id: str) -> SessionView:
        return self._parse(_SESSION, await self._request("GET", f"/v1/sessions/{session_id}"))

    async def kill(self, session_id: str) -> None:
        """End a live session (admin); audited by the gateway before it closes."""
        await self._request("POST", f"/v1/sessions/{session_id}/kill")

    async def placement(self, constraints: Constraints) -> Placement:
        response = await self._request("GET", "/v1/placement", params=constraints.params())
        return self._parse(_PLACEMENT, response)

    async def golden(self, constraints: Constraints, top: int = 3) -> Golden:
        """Run the gateway's golden command on the ``top`` best hosts; results side by side."""
        body: dict[str, Any] = {
            k: v for k, v in constraints.params().items() if k != "client_rtt_ms"
        }
        body.update(gpus=constraints.gpus, top=top, timeout_s=GOLDEN_TIMEOUT_S)
        body["client_rtt_ms"] = round(constraints.client_rtt_ms, 3)
        for key in ("max_latency_ms", "max_price"):
            if key in body:
                body[key] = float(body[key])
        response = await self._request(
            "POST", "/v1/placement/golden", json=body, timeout=GOLDEN_TIMEOUT_S + 30.0
        )
        return self._parse(_GOLDEN, response)

    async def audit(
        self, *, kind: str = "", actor: str = "", after_id: int = 0, limit: int = 200
    ) -> AuditPage:
        params = {"after_id": str(after_id), "limit": str(limit)}
        if kind:
            params["kind"] = kind
        if actor:
            params["actor"] = actor
        return self._parse(_AUDIT, await self._request("GET", "/v1/audit", params=params))

    async def recording(self, session_id: str) -> str:
        """The session's asciicast v2 text."""
        response = await self._request("GET", f"/v1/recordings/{session_id}")
        return response.text

    # -- plumbing --

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise GatewayUnavailable(f"cannot reach {self.base_url}: {reason}") from None
        except httpx.HTTPError as exc:  # e.g. a redirect, which this client does not follow
            raise ClientError(f"{path}: {exc or type(exc).__name__}") from None
        if response.is_success:
            return response
        raise translate(path, response)

    @staticmethod
    def _parse(adapter: TypeAdapter[T], response: httpx.Response) -> T:
        try:
            return adapter.validate_json(response.content)
        except ValidationError as exc:
            first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
            where = ".".join(str(p) for p in first["loc"])
            path = response.request.url.path
            raise ClientError(
                f"{path}: unexpected response from the gateway ({where}: {first['msg']})"
            ) from None


def translate(path: str, response: httpx.Response) -> ClientError:
    """The one ``ClientError`` for a failed response (same mapping as ``client.api``)."""
    status = response.status_code
    code, message = "", response.reason_phrase or f"HTTP {status}"
    try:
        body = response.json()
        detail = body.get("error", {}) if isinstance(body, dict) else {}
        code = str(detail.get("code", ""))
        message = str(detail.get("message", message))
    except ValueError:
        pass
    if status == 401:
        return TokenRejected(
            f"the gateway refused the token ({code or status}: {message}); "
            "run `gpuhop login` again or set a new GPUHOP_TOKEN"
        )
    if status == 403:
        return PolicyDenied(f"denied: {message}")
    if status == 429:
        return GatewayUnavailable(f"{path}: rate limited ({message}); try again later")
    if status >= 500:
        return GatewayUnavailable(f"{path}: the gateway failed ({code or status}: {message})")
    return ClientError(f"{path}: {code or status}: {message}")
