"""The IpacsError tree and the handlers that render every error as `invalidRequest`.

Every error the API returns, from our own services, from request validation,
from routing (404/405) or from a bug (500), leaves through `error_body`, so a
client only ever has one error shape to parse.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger("ipacs.errors")


class IpacsError(Exception):
    status = 400
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers or {}


class InvalidRequest(IpacsError):
    status = 400
    code = "invalid_request"


class InvalidQuery(InvalidRequest):
    """A StringQuery that does not lex, parse or type-check; carries the position."""

    def __init__(self, message: str, position: int, query: str = "") -> None:
        caret = f"\n{query}\n{' ' * position}^" if query else ""
        super().__init__(
            f"{message} (at position {position}){caret}",
            details=[{"position": position, "message": message}],
        )
        self.position = position


class Unauthorized(IpacsError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str = "Authentication required") -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Basic realm="iPACS"'})


class PermissionDenied(IpacsError):
    status = 403
    code = "forbidden"


class NotFound(IpacsError):
    status = 404
    code = "not_found"


class MethodNotAllowed(IpacsError):
    # The contract's list of `error` codes is closed and has no 405 of its own.
    status = 405
    code = "invalid_request"


class Conflict(IpacsError):
    status = 409
    code = "conflict"


class AlreadyExists(Conflict):
    """A row with the same unique key exists: perhaps committed by a concurrent writer a moment
    ago, so a writer that looked first and found nothing may retry (DICOM ingest does)."""


class PreconditionFailed(IpacsError):
    status = 412
    code = "precondition_failed"

    def __init__(self, message: str = "The resource changed since it was read (ETag mismatch)") -> None:
        super().__init__(message)


class PayloadTooLarge(IpacsError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(IpacsError):
    status = 415
    code = "invalid_request"


class NotAcceptable(IpacsError):
    """No representation the `Accept` header allows (DICOMweb content negotiation)."""

    status = 406
    code = "invalid_request"


class TooManyRequests(IpacsError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class InternalError(IpacsError):
    status = 500
    code = "internal_error"


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"success": False, "error": code, "message": message, "details": details or []}


def error_response(exc: IpacsError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.code, exc.message, exc.details),
        status_code=exc.status,
        headers=exc.headers,
    )


_HTTP_STATUS_ERRORS: dict[int, type[IpacsError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: PermissionDenied,
    404: NotFound,
    405: MethodNotAllowed,
    406: NotAcceptable,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


_LOCATIONS = ("body", "query", "path", "header", "cookie")


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    # ("body", "name") -> "name"; ("query", "limit") -> "limit"; ("body", "query") -> "query":
    # only the leading element names where the value was, a body field may be called "query".
    parts = [str(p) for p in loc]
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_detail(err: dict[str, Any]) -> dict[str, Any]:
    loc = tuple(err.get("loc", ()))
    kind = err.get("type")
    if kind == "json_invalid":
        # FastAPI puts the character offset where a field name belongs.
        position = loc[1] if len(loc) > 1 else 0
        reason = (err.get("ctx") or {}).get("error", "cannot be decoded")
        return {"field": "body", "message": f"invalid JSON at position {position}: {reason}"}
    message = str(err.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        message = "unknown field"
    elif loc == ("body",) and isinstance(err.get("input"), bytes):
        # The body arrived as raw bytes: it was not sent as JSON.
        message = "the body must be JSON, sent with Content-Type: application/json"
    return {"field": _field_name(loc), "message": message}


def validation_details(errors: list[Any]) -> list[dict[str, Any]]:
    return [_validation_detail(err) for err in errors]


def _unparsable_body(cause: BaseException) -> InvalidRequest:
    """FastAPI's "error parsing the body", with the reason: what the JSON parser refused."""
    if isinstance(cause, UnicodeDecodeError):
        reason = "the body is not UTF-8"
    elif isinstance(cause, RecursionError):
        reason = "the JSON nests too deeply"
    elif isinstance(cause, ValueError):
        reason = f"the JSON cannot be read: {cause}"
    else:
        reason = "the JSON cannot be read"
    return InvalidRequest(f"Invalid request body: {reason}", [{"field": "body", "message": reason}])


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method some route accepts on this path (Starlette's 405 names only one route's)."""
    allowed = []
    for method in _METHODS:
        probe = {
            "type": "http",
            "path": request.scope["path"],
            "root_path": request.scope.get("root_path", ""),
            "method": method,
        }
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(IpacsError)
    async def _ipacs(_: Request, exc: IpacsError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = validation_details(list(exc.errors()))
        fields = ", ".join(d["field"] for d in details)
        return error_response(InvalidRequest(f"Invalid request: {fields}", details))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.detail == "There was an error parsing the body" and exc.__cause__ is not None:
            return error_response(_unparsable_body(exc.__cause__))
        cls = _HTTP_STATUS_ERRORS.get(exc.status_code)
        message = exc.detail if isinstance(exc.detail, str) else "Request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "No such resource"
        if cls is None:
            err = IpacsError(message, headers=dict(exc.headers or {}))
            err.status = exc.status_code
            err.code = "internal_error" if exc.status_code >= 500 else "invalid_request"
        else:
            err = cls(message)
            err.headers.update(dict(exc.headers or {}))
        if exc.status_code == 405:
            err.headers["Allow"] = _allowed_methods(request)
        return error_response(err)

    @app.exception_handler(StaleDataError)
    async def _stale(_: Request, exc: StaleDataError) -> JSONResponse:
        # A concurrent writer changed the row between our read and our write.
        return error_response(PreconditionFailed("The resource was changed concurrently; re-read it"))

    @app.exception_handler(DataError)
    async def _data(_: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot hold (e.g. an id past PostgreSQL's integer range).
        log.info("data error answered as 400: %s", exc.orig)
        return error_response(InvalidRequest("A value is out of range for the database"))

    @app.exception_handler(OverflowError)
    async def _overflow(_: Request, exc: OverflowError) -> JSONResponse:
        # SQLite's driver refuses integers past 64 bits before the database sees them.
        return error_response(InvalidRequest("A number is out of range"))

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        # A uniqueness race the service's own check could not see.
        log.info("integrity error answered as 409: %s", exc.orig)
        return error_response(Conflict("The change conflicts with existing data"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error %s on %s %s", error_id, request.method, request.url.path)
        return error_response(
            InternalError(f"Internal server error (error id {error_id}); the event has been logged")
        )
