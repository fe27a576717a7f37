"""Study bodies."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated
from uuid import UUID

from pydantic import BeforeValidator, Field, field_validator

from ipacs.schemas import Creator, InputModel, OutputModel

# A DICOM UID: dot-separated numbers without leading zeros, at most 64 characters.
UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"
# DICOM TM written as HH:MM[:SS[.ffffff]] or HHMMSS[.ffffff].
TIME_PATTERN = r"^([01][0-9]|2[0-3]):?[0-5][0-9](:?[0-5][0-9](\.[0-9]{1,6})?)?$"
MODALITY_PATTERN = r"^[A-Z0-9_]{1,16}$"
MODALITIES_MAX_LENGTH = 200  # the width of studies.modalities


def _iso_date_text(value: object) -> object:
    # Pydantic alone would read 86400 or "86400" as a Unix time and
    # "2024-03-01T00:00:00" as a date; the contract's dates are 'YYYY-MM-DD'.
    if isinstance(value, int | float) or (
        isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)
    ):
        raise ValueError("expected a date 'YYYY-MM-DD'")
    return value


# A date in a request body: 'YYYY-MM-DD' in JSON (a `date` from Python code, e.g. DICOM ingest).
IsoDate = Annotated[date, BeforeValidator(_iso_date_text)]


class StudyOut(OutputModel):
    id: int
    uuid: UUID
    study_instance_uid: str
    patient_id: int = Field(description="the patient's id (not its DICOM PatientID)")
    project_id: int
    accession_number: str | None
    study_date: date | None
    study_time: str | None
    description: str | None
    modalities: list[str]
    visit: str | None
    status: str | None
    series_count: int
    instance_count: int
    size_bytes: int
    created_at: datetime
    updated_at: datetime
    creator: Creator | None

    @field_validator("modalities", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [m for m in value.split("\\") if m]
        return value


class PostStudyResponse(OutputModel):
    success: bool = True
    id: int
    uuid: UUID
    study_instance_uid: str


class StudyFields(InputModel):
    accession_number: str | None = Field(None, max_length=64)
    study_date: IsoDate | None = None
    study_time: str | None = Field(None, pattern=TIME_PATTERN)
    description: str | None = Field(None, max_length=10000)
    visit: str | None = Field(None, max_length=100)
    status: str | None = Field(None, max_length=50)
    modalities: list[str] | None = Field(None, max_length=20)
    # A project in the patient's project subtree; default: the patient's project.
    project_id: int | None = None

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for m in value:
                if not re.fullmatch(MODALITY_PATTERN, m):
                    raise ValueError(f"not a DICOM modality code: {m!r}")
            # They are stored joined with backslashes in a column of this size.
            if len("\\".join(value)) > MODALITIES_MAX_LENGTH:
                raise ValueError(f"at most {MODALITIES_MAX_LENGTH} characters together")
        return value


class StudyCreate(StudyFields):
    study_instance_uid: str | None = Field(None, max_length=64, pattern=UID_PATTERN)


class StudyUpdate(StudyFields):
    pass
