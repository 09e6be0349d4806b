"""HTTP answers and transport failures -> the one ``client.errors`` exception, once.

    transport failure, 429, 5xx     GatewayUnavailable (69)
    any other httpx error           ClientError (e.g. a redirect, which is not followed)
    401                             TokenRejected (78)
    403                             PolicyDenied (77): "denied: <why> (<path>)"
    /v1/admin 404 / 409, 422 / 502  NotFound (66) / AdminRefused (65) / HostLost (75)
    a code naming a bad argument    UsageError (2): the gateway's message alone
    anything else                   ClientError (1) with the gateway's code and message
    a body that is not the model    ClientError: "unexpected response from the gateway"

Every edge (CLI line + exit code, TUI notification) shows what these say.
"""

from __future__ import annotations

import httpx
from pydantic import TypeAdapter, ValidationError

from client.api.models import ErrorBody
from client.errors import (
    AdminRefused,
    ClientError,
    GatewayUnavailable,
    HostLost,
    NotFound,
    PolicyDenied,
    TokenRejected,
    UsageError,
)

_ERROR_BODY = TypeAdapter(ErrorBody)
ARGUMENT_CODES = frozenset({"unknown_dataset"})
"""Gateway codes that mean a value the user gave is wrong (``--data nosuch``): the
message says which, and the API path would only distract."""


def transport_error(base_url: str, path: str, exc: httpx.HTTPError) -> ClientError:
    """A request that got no HTTP answer the client can use."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TransportError):
        return GatewayUnavailable(f"cannot reach {base_url}: {reason}")
    return ClientError(f"{path}: {reason}")


def response_error(path: str, response: httpx.Response) -> ClientError:
    """The one ``ClientError`` for a response that is not a success."""
    status = response.status_code
    try:
        detail = _ERROR_BODY.validate_json(response.content).error
        code, message = detail.code, detail.message
    except ValidationError:
        code, message = "", response.reason_phrase or f"HTTP {status}"
    if status == 401:
        return TokenRejected(
            f"the gateway refused the token ({code or status}: {message}); "
            "run `gpuhop login` again or set a new GPUHOP_TOKEN"
        )
    if code in ARGUMENT_CODES:
        return UsageError(message)
    if status == 403:
        return PolicyDenied(f"denied: {message} ({path})")
    if status == 429:
        return GatewayUnavailable(f"{path}: rate limited ({message}); try again later")
    admin = _admin_error(status, f"{path}: {message}") if path.startswith("/v1/admin") else None
    if admin is not None:
        return admin
    if status >= 500:
        return GatewayUnavailable(f"{path}: the gateway failed ({code or status}: {message})")
    return ClientError(f"{path}: {code or status}: {message}")


def malformed(path: str, exc: ValidationError) -> ClientError:
    """A success whose body is not what the client reads."""
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
    where = ".".join(str(p) for p in first["loc"])
    return ClientError(f"{path}: unexpected response from the gateway ({where}: {first['msg']})")


def _admin_error(status: int, message: str) -> ClientError | None:
    """``/v1/admin`` refusals: no such entry (66), a refused change (65), an unreachable host."""
    if status == 404:
        return NotFound(message)
    if status in (409, 422):
        return AdminRefused(message)
    if status == 502:
        return HostLost(message)
    return None
