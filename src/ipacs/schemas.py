"""Schemas shared by every domain: Creator, SuccessResponse, the error body."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class InputModel(BaseModel):
    """Base of every request body: unknown fields are refused, strings trimmed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


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
