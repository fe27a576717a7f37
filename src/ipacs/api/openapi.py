"""The OpenAPI document, completed with what every operation can answer.

FastAPI describes a `422` that this API never sends (validation errors are
`400` with the `invalidRequest` body, see errors.py) and knows nothing of the
answers that come from outside an endpoint: authentication (`401`, and `429`
while failed logins are throttled), the CSRF check on cookie-authenticated
writes (`403`), the body and query string limits (`413`, `414`) and the
catch-all `500`. This
module writes them into the document, so that a client generator, a reader
and the schemathesis run in tests/security all see every status the server
can answer, each with the `invalidRequest` body.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA = {"$ref": "#/components/schemas/InvalidRequestBody"}
# Operations that answer without authentication.
PUBLIC_PATHS = frozenset({"/healthz", "/metrics"})
UNSAFE_METHODS = frozenset({"post", "put", "patch", "delete"})

_DESCRIPTIONS = {
    "400": "Invalid request: a parameter or the body failed validation (`details` names each field)",
    "401": "No valid credentials or session",
    "403": "Not allowed (or a cookie-authenticated write from a foreign Origin)",
    "408": "The request body stalled (no data for the configured idle timeout)",
    "413": "Request body over the size limit",
    "414": "Query string over the size limit",
    "429": "Too many failed logins for this user or address; retry after `Retry-After` seconds",
    "500": "Internal error; the message carries an error id that is in the server's log",
}
_HEADERS: dict[str, dict[str, Any]] = {
    "401": {
        "WWW-Authenticate": {
            "description": 'Always `Basic realm="iPACS"`',
            "schema": {"type": "string"},
            "required": True,
        }
    },
    "429": {
        "Retry-After": {
            "description": "Seconds to wait",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
            "required": True,
        }
    },
}
SECURITY_SCHEMES = {
    "basic": {"type": "http", "scheme": "basic", "description": "HTTP Basic; opens a session"},
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "ipacs_session",
        "description": "The session cookie a Basic-authenticated request received",
    },
}


def _error_response(status: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def _complete_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)
    for status, response in responses.items():
        # Errors declared by endpoints get the header and description the server really sends.
        if status in _HEADERS and "content" in response:
            response.setdefault("headers", _HEADERS[status])
    wanted = ["414", "500"]
    if path in PUBLIC_PATHS:
        operation["security"] = []
    else:
        wanted += ["401", "429"]
    if operation.get("parameters") or operation.get("requestBody"):
        wanted.append("400")
    if operation.get("requestBody"):
        wanted += ["408", "413"]
    if method in UNSAFE_METHODS and path not in PUBLIC_PATHS:
        wanted.append("403")
    for status in wanted:
        responses.setdefault(status, _error_response(status))


def complete_document(document: dict[str, Any]) -> dict[str, Any]:
    """Add the statuses every operation can answer; drop FastAPI's unused 422 schemas."""
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "delete", "patch", "head", "options"}:
                _complete_operation(path, method, operation)
    components = document.setdefault("components", {})
    schemas = components.get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = SECURITY_SCHEMES
    document["security"] = [{"basic": []}, {"session": []}]
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document at the app's openapi_url."""
    build = app.openapi
    completed: list[int] = []

    def openapi() -> dict[str, Any]:
        document = build()  # FastAPI's own, cached until the routes change
        if completed != [id(document)]:
            complete_document(document)
            completed[:] = [id(document)]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
