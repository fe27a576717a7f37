"""What the client raises: the server's `invalidRequest` body, as exceptions by status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class IpacsClientError(Exception):
    """Base of everything the client raises."""


class CredentialsError(IpacsClientError):
    """No usable server address or credentials, or an unsafe credentials file."""


class ConnectionFailed(IpacsClientError):
    """The server could not be reached (after the retries)."""


@dataclass(frozen=True)
class ErrorDetail:
    """One entry of `details`: a field (e.g. `rows[3].age`) or a query position, and what is wrong."""

    message: str
    field: str | None = None
    position: int | None = None

    def __str__(self) -> str:
        if self.field is not None:
            return f"{self.field}: {self.message}"
        if self.position is not None:
            return f"position {self.position}: {self.message}"
        return self.message


class ApiError(IpacsClientError):
    """The server answered with an error: its status, `error` code, `message` and `details`."""

    status = 0

    def __init__(
        self, message: str, *, status: int = 0, error: str = "", details: list[ErrorDetail] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status or type(self).status
        self.error = error
        self.details = details or []

    def __str__(self) -> str:
        lines = [self.message, *(f"  {d}" for d in self.details)]
        return "\n".join(lines)


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class ConcurrentUpdate(ApiError):
    """412: the entity changed since it was read; nothing was overwritten."""

    status = 412


class PayloadTooLarge(ApiError):
    status = 413


class TooManyRequests(ApiError):
    status = 429


class ServerError(ApiError):
    status = 500


class AmbiguousMatch(IpacsClientError):
    """A name or patient_id that matches more than one entity."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: ConcurrentUpdate,
    413: PayloadTooLarge,
    429: TooManyRequests,
}


def _details(raw: Any) -> list[ErrorDetail]:
    if not isinstance(raw, list):
        return []
    return [
        ErrorDetail(message=str(d.get("message", "")), field=d.get("field"), position=d.get("position"))
        for d in raw
        if isinstance(d, dict)
    ]


def error_from_response(response: httpx.Response) -> ApiError:
    """The exception for an error answer; the body is read if it was streamed."""
    response.read()
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "message" in body:
        message, code, details = (
            str(body["message"]),
            str(body.get("error", "")),
            _details(body.get("details")),
        )
    else:
        message, code, details = f"HTTP {response.status_code}: {response.text[:500]}", "", []
    if response.status_code == 412:
        message += "; nothing was overwritten: read it again and re-apply your change"
    cls = _BY_STATUS.get(response.status_code, ServerError if response.status_code >= 500 else ApiError)
    return cls(message, status=response.status_code, error=code, details=details)
