"""The client's return types: the server's own response schemas, plus the ETag where
an entity can be updated (sent back as If-Match, so that no update is lost)."""

from __future__ import annotations

from pydantic import Field

from ipacs.datapoints.import_schemas import ImportSummaryOut
from ipacs.datapoints.schemas import DatapointOut, DatapointValueOut, ValueVersionOut
from ipacs.dicom.schemas import SeriesOut, UploadSummaryOut
from ipacs.patients.schemas import PatientOut
from ipacs.projects.schemas import ProjectOut
from ipacs.search.schemas import PatientResult, SearchResponse, StudyResult
from ipacs.studies.schemas import StudyOut
from ipacs.users.schemas import MeOut

__all__ = [
    "Datapoint",
    "DatapointValue",
    "ImportSummaryOut",
    "MeOut",
    "Patient",
    "PatientResult",
    "Project",
    "SearchResponse",
    "SeriesOut",
    "Study",
    "StudyResult",
    "UploadSummaryOut",
    "ValueVersionOut",
]

ETAG = Field(None, exclude=True, description="the ETag it was read with, for If-Match")


class Project(ProjectOut):
    etag: str | None = ETAG

    @property
    def full_path(self) -> str:
        """The project's path as the client accepts it: "Trial A/Site 1"."""
        return "/".join([*(p.name for p in self.path), self.name])


class Patient(PatientOut):
    etag: str | None = ETAG


class Study(StudyOut):
    etag: str | None = ETAG


class DatapointValue(DatapointValueOut):
    etag: str | None = ETAG


Datapoint = DatapointOut
