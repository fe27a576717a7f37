"""Datapoint definition and value bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BeforeValidator, Field

from ipacs.schemas import Creator, InputModel, OutputModel

DATAPOINT_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
DatapointType = Literal["string", "integer", "decimal", "boolean", "date", "datetime", "choice"]


def _not_boolean(value: Any) -> Any:
    # JSON true/false would otherwise be read as the integers 1/0.
    if isinstance(value, bool):
        raise ValueError("expected a number, or a date or datetime string, not true/false")
    return value


# A minimum or maximum: a number, or an ISO date/datetime string; the type check is the service's.
Bound = Annotated[int | float | str, BeforeValidator(_not_boolean)]


class DatapointOut(OutputModel):
    id: int
    uuid: UUID
    project_id: int
    name: str
    label: str | None
    description: str | None
    type: DatapointType
    choices: list[str] | None
    unit: str | None
    minimum: Bound | None
    maximum: Bound | None
    pattern: str | None
    required: bool
    created_at: datetime
    updated_at: datetime
    creator: Creator | None


class DatapointCreate(InputModel):
    name: str = Field(min_length=1, max_length=64, pattern=DATAPOINT_NAME_PATTERN)
    label: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=10000)
    type: DatapointType
    choices: list[str] | None = Field(None, max_length=1000)
    unit: str | None = Field(None, max_length=50)
    minimum: Bound | None = None
    maximum: Bound | None = None
    pattern: str | None = Field(None, max_length=500)
    required: bool = False


class DatapointUpdate(InputModel):
    name: str | None = Field(None, min_length=1, max_length=64, pattern=DATAPOINT_NAME_PATTERN)
    label: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=10000)
    type: DatapointType | None = None
    choices: list[str] | None = Field(None, max_length=1000)
    unit: str | None = Field(None, max_length=50)
    minimum: Bound | None = None
    maximum: Bound | None = None
    pattern: str | None = Field(None, max_length=500)
    required: bool | None = None


class PostDatapointResponse(OutputModel):
    success: bool = True
    id: int
    uuid: UUID


class DatapointValueOut(OutputModel):
    id: int | None
    uuid: UUID | None
    datapoint_id: int
    datapoint_name: str
    patient_id: int
    value: Any
    version: int | None
    created_at: datetime | None
    updated_at: datetime | None
    creator: Creator | None
    updated_by: Creator | None


class ValueCreate(InputModel):
    """Set a value, naming the datapoint by id or by name."""

    datapoint_id: int | None = None
    datapoint_name: str | None = Field(None, max_length=64)
    value: Any = Field(description="typed JSON, validated against the definition")


class ValueUpdate(InputModel):
    value: Any = Field(description="typed JSON, validated against the definition")


class ValueVersionOut(OutputModel):
    """An earlier version of a value: what it was, who wrote it and when it was replaced."""

    version: int
    value: Any
    changed_at: datetime
    changed_by: Creator | None
    replaced_at: datetime
    replaced_by: Creator | None
