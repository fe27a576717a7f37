"""DICOM response bodies."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from ipacs.schemas import OutputModel


class SeriesOut(OutputModel):
    id: int
    uuid: UUID
    series_instance_uid: str
    modality: str | None
    series_number: int | None
    series_description: str | None
    body_part_examined: str | None
    instance_count: int
    size_bytes: int
    created_at: datetime


class StudyRef(OutputModel):
    id: int
    uuid: UUID
    study_instance_uid: str


class UploadFailure(OutputModel):
    name: str
    reason: str


class UploadSummaryOut(OutputModel):
    """What an upload did: each file stored, a duplicate, or failed with its reason."""

    stored: int
    duplicates: int
    failed: list[UploadFailure]
    studies: list[StudyRef]
