"""How the HTTP edge maps errors: one status and one stable code, exactly once.

Routes raise ``ApiError(status, code, message)``; gateway errors that reach the
edge are mapped here (``StorageError`` → 503 ``storage_unavailable``, a refused
directory change → its own status and code); request
validation and routing errors get the same JSON shape, so a client needs one
parser: ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from gateway.edges.http.schemas import ErrorBody, ErrorCode, ErrorDetail
from gateway.errors import DirectoryError, StorageError

log = structlog.get_logger("gpuhop.api")


class ApiError(Exception):
    """An error response; raised by routes and dependencies."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_response(
    status: int, code: ErrorCode, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


_HTTP_CODES: dict[int, ErrorCode] = {404: "not_found", 405: "method_not_allowed"}


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "invalid_request")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return error_response(422, "invalid_request", message)


async def _directory_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DirectoryError)
    code: ErrorCode = exc.code  # type: ignore[assignment]  # DirectoryError codes are ErrorCodes
    return error_response(exc.status, code, str(exc))


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("storage failed", path=request.url.path, error=str(exc))
    return error_response(503, "storage_unavailable", "storage is unavailable; try again")


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled API error", path=request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error")


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DirectoryError, _directory_error)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(Exception, _internal_error)


def described(description: str) -> dict[str, Any]:
    """An error response for a route's ``responses``."""
    return {"model": ErrorBody, "description": description}


#: Error responses every authenticated route documents (the 422 replaces FastAPI's own shape).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: described("Missing, unknown, expired or revoked token"),
    403: described("The token's scope does not allow this"),
    413: described("The request body is larger than this route accepts"),
    422: described("The request is not valid"),
    429: described("Too many failed authentications with this token from this address"),
    503: described("Storage is unavailable"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: described("No such resource")}
