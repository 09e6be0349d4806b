"""A typed client for the gateway's HTTP API (v1), over httpx.

    with GatewayApi("https://gw.example:8080", token) as api:
        for host in api.hosts():
            print(host.name, host.gpus_free)

Responses are parsed into the pydantic models below, which name only the
fields the client uses and ignore the rest, so a newer gateway can add fields
without breaking an older client. A unit test checks every field here against
the committed ``docs/openapi.json``: the client never imports the gateway.

Errors are translated once, here: a transport failure or a 5xx is
``GatewayUnavailable``; 401 is ``TokenRejected``; 403 is ``PolicyDenied``;
anything else unexpected is a ``ClientError`` with the gateway's message. Pass
``transport=httpx.MockTransport(handler)`` to test without a gateway.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from client import __version__
from client.errors import (
    AdminRefused,
    ClientError,
    GatewayUnavailable,
    HostLost,
    NotFound,
    PolicyDenied,
    TokenRejected,
)
from client.settings import Secret

_WIRE = ConfigDict(extra="ignore", frozen=True)
M = TypeVar("M", bound=BaseModel)


class Me(BaseModel):
    """``GET /v1/me``: whom the token speaks for."""

    model_config = _WIRE

    user: str
    scope: Literal["user", "ci", "admin"]
    token_id: str
    expires_at: float
    in_inventory: bool
    roles: list[str]
    accounts: list[str]


class HostInfo(BaseModel):
    """One entry of ``GET /v1/hosts``."""

    model_config = _WIRE

    name: str
    region: str
    country: str
    status: Literal["up", "down", "unknown"]
    gpu_model: str
    gpus_total: int
    gpus_free: int
    price_per_gpu_hour: float
    egress_per_gb: float
    rtt_ms: float | None
    allowed: bool


class GatewayInfo(BaseModel):
    """``GET /v1/gateway``: where the SSH front is and which keys to pin."""

    model_config = _WIRE

    version: str
    ssh_host: str
    ssh_port: int
    host_key: str
    host_ca_key: str
    host_keys: dict[str, str]
    gateway_keys: list[str] = []  # host_key, then a staged next key (older gateways: none)


class Certificate(BaseModel):
    """``POST /v1/certificates``: a signed OpenSSH user certificate."""

    model_config = _WIRE

    certificate: str
    key_id: str
    principals: list[str]
    valid_after: int
    valid_before: int


class RankedHost(BaseModel):
    model_config = _WIRE

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
    sync_s: float
    sync_throughput_bps: float
    sync_basis: str


class ExcludedHost(BaseModel):
    model_config = _WIRE

    name: str
    region: str
    reasons: list[str]


class Placement(BaseModel):
    model_config = _WIRE

    ranked: list[RankedHost]
    excluded: list[ExcludedHost]
    weights: dict[str, float]


class GoldenHost(BaseModel):
    """One candidate's golden-test run beside its prediction."""

    model_config = _WIRE

    rank: int
    name: str
    region: str
    predicted_cost: float
    predicted_latency_ms: float
    price_per_gpu_hour: float
    currency: str
    status: str  # ok, failed, denied, no_gpus, timeout, unreachable
    exit_status: int | None
    seconds: float
    rtt_ms: float | None = None  # the round trip on the connection it ran over
    measured_cost: float
    gpus: list[int]
    output: list[str]
    error: str


class Golden(BaseModel):
    """``POST /v1/placement/golden``: the command and each candidate's result."""

    model_config = _WIRE

    command: str
    hosts: list[GoldenHost]
    excluded: list[ExcludedHost]


class _ErrorDetail(BaseModel):
    model_config = _WIRE

    code: str
    message: str


class _ErrorBody(BaseModel):
    model_config = _WIRE

    error: _ErrorDetail


_HOSTS = TypeAdapter(list[HostInfo])


class GatewayApi:
    """One gateway's API, authenticated with one bearer token."""

    def __init__(
        self,
        base_url: str,
        token: Secret,
        *,
        timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url,
            headers={
                "Authorization": f"Bearer {token.get()}",
                "User-Agent": f"gpuhop/{__version__}",
                "Accept": "application/json",
            },
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def __enter__(self) -> GatewayApi:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def me(self) -> Me:
        """Who the token is; also proves that it works."""
        return self._model(Me, self._request("GET", "/v1/me"))

    def hosts(self) -> list[HostInfo]:
        """Every inventory host, with ``allowed`` saying whether the caller may use it."""
        try:
            return _HOSTS.validate_json(self._request("GET", "/v1/hosts").content)
        except ValidationError as exc:
            raise self._malformed("/v1/hosts", exc) from None

    def gateway(self) -> GatewayInfo:
        """The SSH endpoint and the keys a client pins for it."""
        return self._model(GatewayInfo, self._request("GET", "/v1/gateway"))

    def sign_certificate(self, public_key: str, validity_s: int | None = None) -> Certificate:
        """A certificate for ``public_key`` (an OpenSSH public key line)."""
        body: dict[str, Any] = {"public_key": public_key}
        if validity_s is not None:
            body["validity_s"] = validity_s
        response = self._request("POST", "/v1/certificates", json=body)
        return self._model(Certificate, response)

    def placement(self, **params: Any) -> Placement:
        """Hosts ranked for a job, and why every other host is excluded (``gpuhop pick``)."""
        query = {k: v for k, v in params.items() if v not in (None, "")}
        return self._model(Placement, self._request("GET", "/v1/placement", params=query))

    def golden(self, timeout_s: float = 60.0, **body: Any) -> Golden:
        """Run the golden test on the best-ranked hosts (``gpuhop pick --golden``)."""
        payload = {k: v for k, v in body.items() if v not in (None, "")}
        payload["timeout_s"] = timeout_s
        response = self._request(
            "POST", "/v1/placement/golden", json=payload, timeout=timeout_s + 30.0
        )
        return self._model(Golden, response)

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request, errors translated as everywhere here (for ``client.admin``)."""
        return self._request(method, path, **kw)

    def parse(self, model: type[M], response: httpx.Response) -> M:
        """``response``'s body as ``model``, or one ``ClientError``."""
        return self._model(model, response)

    # -- plumbing --

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise GatewayUnavailable(f"cannot reach {self.base_url}: {reason}") from None
        if response.is_success:
            return response
        raise self._error(path, response)

    def _error(self, path: str, response: httpx.Response) -> ClientError:
        status = response.status_code
        try:
            detail = _ErrorBody.model_validate_json(response.content).error
            code, message = detail.code, detail.message
        except ValidationError:
            code, message = "", response.reason_phrase or f"HTTP {status}"
        if status == 401:
            return TokenRejected(
                f"the gateway refused the token ({code or status}: {message}); "
                "run `gpuhop login` again or set a new GPUHOP_TOKEN"
            )
        if status == 403:
            return PolicyDenied(f"{path}: {message}")
        if status == 429:
            return GatewayUnavailable(f"{path}: rate limited ({message}); try again later")
        if path.startswith("/v1/admin"):
            admin = _admin_error(status, f"{path}: {message}")
            if admin is not None:
                return admin
        if status >= 500:
            return GatewayUnavailable(f"{path}: the gateway failed ({code or status}: {message})")
        return ClientError(f"{path}: {code or status}: {message}")

    def _model(self, model: type[M], response: httpx.Response) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise self._malformed(str(response.request.url.path), exc) from None

    def _malformed(self, path: str, exc: ValidationError) -> ClientError:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"])
        return ClientError(
            f"{path}: unexpected response from the gateway ({where}: {first['msg']})"
        )


def _admin_error(status: int, message: str) -> ClientError | None:
    """``/v1/admin`` refusals: no such entry (66), a refused change (65), an unreachable host."""
    if status == 404:
        return NotFound(message)
    if status in (409, 422):
        return AdminRefused(message)
    if status == 502:
        return HostLost(message)
    return None
