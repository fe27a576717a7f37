"""Patient bodies."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from uuid import UUID

from pydantic import Field, field_validator

from ipacs import clock
from ipacs.datapoints.schemas import DatapointOut, DatapointValueOut
from ipacs.schemas import Creator, InputModel, OutputModel
from ipacs.studies.schemas import IsoDate, StudyOut

# DICOM PatientID is an LO: up to 64 characters, no backslash or control characters.
PATIENT_ID_PATTERN = r"^[^\\\x00-\x1f]{1,64}$"
Sex = Literal["M", "F", "O"]


class PatientOut(OutputModel):
    id: int
    uuid: UUID
    project_id: int
    patient_id: str
    patient_name: str | None
    birth_date: date | None
    sex: Sex | None
    created_at: datetime
    updated_at: datetime
    creator: Creator | None


class PatientDetail(PatientOut):
    """A patient with its studies, the datapoints that apply to it and its values."""

    studies: list[StudyOut]
    datapoints: list[DatapointOut]
    datapoint_values: list[DatapointValueOut]


def _not_future(value: date | None) -> date | None:
    if value is not None and value > clock.now().date():
        raise ValueError("birth_date cannot be in the future")
    return value


class PatientEmpty(InputModel):
    """The body that creates a patient."""

    patient_id: str = Field(pattern=PATIENT_ID_PATTERN)
    patient_name: str | None = Field(None, max_length=200)
    birth_date: IsoDate | None = None
    sex: Sex | None = None

    _birth_date = field_validator("birth_date")(_not_future)


class PatientUpdate(InputModel):
    patient_id: str | None = Field(None, pattern=PATIENT_ID_PATTERN)
    patient_name: str | None = Field(None, max_length=200)
    birth_date: IsoDate | None = None
    sex: Sex | None = None
    # Moves the patient (and its studies) to another project.
    project_id: int | None = None

    _birth_date = field_validator("birth_date")(_not_future)

    @field_validator("patient_id")
    @classmethod
    def _keep_patient_id(cls, value: str | None) -> str:
        # Absent means unchanged; null would leave the patient without an identifier.
        if value is None:
            raise ValueError("patient_id cannot be removed")
        return value
