"""Schemas shared by every domain: Creator, SuccessResponse, the error body."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

# No request body of this API nests deeper than a few levels; a deeper one is refused before
# anything walks it (the JSON parser itself stops near 1,000 levels, see errors.py).
MAX_BODY_DEPTH = 32


def check_json_value(value: Any, depth: int = 0) -> None:
    """Refuse NUL characters anywhere in a body value, and nesting past MAX_BODY_DEPTH.

    PostgreSQL cannot store NUL in text and SQLite would store it silently;
    both now refuse it the same way, with a 400 naming the field.
    """
    if depth > MAX_BODY_DEPTH:
        raise ValueError(f"nested deeper than {MAX_BODY_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("NUL characters (\\x00) are not allowed")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_json_value(key, depth + 1)
            check_json_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_json_value(item, depth + 1)


class InputModel(BaseModel):
    """Base of every request body: unknown fields are refused, strings trimmed, NUL refused."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul_nor_deep_nesting(cls, value: Any) -> Any:
        check_json_value(value)
        return value


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Creator(OutputModel):
    id: int
    username: str
    full_name: str


class SuccessResponse(BaseModel):
    success: bool = True
    message: str


ErrorCode = Literal[
    "invalid_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "precondition_failed",
    "payload_too_large",
    "too_many_requests",
    "internal_error",
]


class ErrorDetail(BaseModel):
    field: str | None = None
    position: int | None = None
    message: str


class InvalidRequestBody(BaseModel):
    """Every error answer: the contract's `invalidRequest`."""

    success: Literal[False] = False
    error: ErrorCode
    message: str
    details: list[ErrorDetail]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the error statuses an endpoint can answer."""
    return {s: {"model": InvalidRequestBody} for s in statuses}
