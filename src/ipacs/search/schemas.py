"""Search request and response bodies."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import Field

from ipacs.datapoints.schemas import DatapointValueOut
from ipacs.patients.schemas import PatientOut
from ipacs.query import MAX_QUERY_LENGTH
from ipacs.schemas import InputModel, OutputModel
from ipacs.studies.schemas import StudyOut

Operator = Literal["eq", "ne", "lt", "le", "gt", "ge", "contains"]


class StringQuery(InputModel):
    query: str = Field("", max_length=MAX_QUERY_LENGTH, description="the StringQuery; empty matches all")
    target: Literal["patients", "studies"] = "patients"
    limit: int = Field(100, ge=1, le=1000)
    after: int | None = Field(None, ge=0, description="keyset: next_after of the previous page")
    include_values: bool = Field(False, description="add each result's datapoint values by name")


class PatientResult(PatientOut):
    values: dict[str, Any] | None = None


class StudyResult(StudyOut):
    values: dict[str, Any] | None = None


class SearchResponse(OutputModel):
    results: list[PatientResult] | list[StudyResult]
    total: int
    next_after: int | None


class PatientRef(OutputModel):
    id: int
    uuid: UUID
    patient_id: str
    project_id: int


class DatapointValueMatch(DatapointValueOut):
    """A matching value with its patient."""

    patient: PatientRef
