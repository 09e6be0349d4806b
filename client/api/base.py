"""Every endpoint the client uses, written once as a ``Call``: the request, and how its
answer becomes a model. ``Client`` and ``AsyncClient`` only send calls.

    call = hosts()                     # GET /v1/hosts -> list[HostView]
    response = http.request(call.method, call.path, **call.request_kw())
    listing = call.result(response)    # a model, or raises one ClientError
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError

from client import __version__
from client.api.errors import malformed, response_error
from client.api.models import (
    AuditPage,
    Certificate,
    Constraints,
    GatewayInfo,
    Golden,
    HostView,
    Me,
    Placement,
    SessionPage,
    SessionView,
)

T = TypeVar("T")
GOLDEN_TIMEOUT_S = 60.0


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(model: Any) -> TypeAdapter[Any]:
    """One validator per model, built on first use (building one costs milliseconds)."""
    found = _ADAPTERS.get(model)
    if found is None:
        found = _ADAPTERS[model] = TypeAdapter(model)
    return found


def parse(model: type[T], response: httpx.Response) -> T:
    """``response``'s body as ``model`` (a dataclass or pydantic model), or one ``ClientError``."""
    try:
        value: T = _adapter(model).validate_json(response.content)
    except ValidationError as exc:
        raise malformed(response.request.url.path, exc) from None
    return value


def to_json(value: Any) -> Any:
    """A model as plain JSON data (``--json`` output)."""
    return _adapter(type(value)).dump_python(value, mode="json")


def _hosts(response: httpx.Response) -> list[HostView]:
    return parse(list[HostView], response)


def _text(response: httpx.Response) -> str:
    return response.text


def _nothing(response: httpx.Response) -> None:
    return None


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the parser of its successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str] | None = None
    json: Any = None
    timeout: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def request_kw(self) -> dict[str, Any]:
        kw: dict[str, Any] = dict(self.extra)
        if self.params is not None:
            kw["params"] = self.params
        if self.json is not None:
            kw["json"] = self.json
        if self.timeout is not None:
            kw["timeout"] = self.timeout
        return kw

    def result(self, response: httpx.Response) -> T:
        if not response.is_success:
            raise response_error(self.path, response)
        return self.parse(response)


def _model(model: type[T]) -> Callable[[httpx.Response], T]:
    return functools.partial(parse, model)


def health() -> Call[None]:
    return Call("GET", "/v1/health", _nothing)


def me() -> Call[Me]:
    """Who the token is; also proves that it works."""
    return Call("GET", "/v1/me", _model(Me))


def hosts() -> Call[list[HostView]]:
    """Every inventory host, with ``allowed`` saying whether the caller may use it."""
    return Call("GET", "/v1/hosts", _hosts)


def gateway() -> Call[GatewayInfo]:
    """The SSH endpoint and the keys a client pins for it."""
    return Call("GET", "/v1/gateway", _model(GatewayInfo))


def sign_certificate(public_key: str, validity_s: int | None = None) -> Call[Certificate]:
    """A certificate for ``public_key`` (an OpenSSH public key line)."""
    body: dict[str, Any] = {"public_key": public_key}
    if validity_s is not None:
        body["validity_s"] = validity_s
    return Call("POST", "/v1/certificates", _model(Certificate), json=body)


def placement(constraints: Constraints) -> Call[Placement]:
    """The gateway's ranking for a job, and why every other host is excluded."""
    return Call("GET", "/v1/placement", _model(Placement), params=constraints.params())


def golden(
    constraints: Constraints,
    *,
    top: int = 3,
    timeout_s: float = GOLDEN_TIMEOUT_S,
    command: str = "",
) -> Call[Golden]:
    """Run the golden test (``command``, or the gateway's) on the ``top`` best-ranked hosts."""
    body: dict[str, Any] = {**constraints.fields(), "top": top, "timeout_s": timeout_s}
    if command:
        body["command"] = command
    return Call("POST", "/v1/placement/golden", _model(Golden), json=body, timeout=timeout_s + 30.0)


def sessions(
    *, live: bool | None = None, user: str | None = None, limit: int = 100
) -> Call[SessionPage]:
    """Newest first: the caller's own, or everyone's for an admin token."""
    params: dict[str, str] = {"limit": str(limit)}
    if live is not None:
        params["live"] = "true" if live else "false"
    if user is not None:
        params["user"] = user
    return Call("GET", "/v1/sessions", _model(SessionPage), params=params)


def session(session_id: str) -> Call[SessionView]:
    return Call("GET", f"/v1/sessions/{session_id}", _model(SessionView))


def kill(session_id: str) -> Call[None]:
    """End a live session (admin); audited by the gateway before it closes."""
    return Call("POST", f"/v1/sessions/{session_id}/kill", _nothing)


def audit(
    *, kind: str = "", actor: str = "", after_id: int = 0, limit: int = 200
) -> Call[AuditPage]:
    params = {"after_id": str(after_id), "limit": str(limit)}
    if kind:
        params["kind"] = kind
    if actor:
        params["actor"] = actor
    return Call("GET", "/v1/audit", _model(AuditPage), params=params)


def recording(session_id: str) -> Call[str]:
    """The session's asciicast v2 text."""
    return Call("GET", f"/v1/recordings/{session_id}", _text)


def raw(method: str, path: str, **kw: Any) -> Call[httpx.Response]:
    """Any request, errors mapped as everywhere (``client.admin`` parses the answer)."""
    return Call(method, path, lambda response: response, extra=kw)


def client_options(base_url: str, token: str, timeout: float, agent: str) -> dict[str, Any]:
    """The ``httpx.Client``/``AsyncClient`` arguments both clients share."""
    return {
        "base_url": base_url,
        "headers": {
            "Authorization": f"Bearer {token}",
            "User-Agent": f"{agent}/{__version__}",
            "Accept": "application/json",
        },
        "timeout": timeout,
        "follow_redirects": False,
    }
