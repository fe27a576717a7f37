"""STOW-RS: store instances through the same Upload and Ingestor as the REST upload,
and answer with the PS3.18 Store Instances Response (Annex I).

Status: 200 when every instance is stored (a re-sent identical instance
counts as stored), 202 when some failed, 409 when all failed. Each failure
carries its DICOM FailureReason code and, as an iPACS addition, the reason
in words in ErrorComment (0000,0902).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom

from ipacs.db.engine import Database
from ipacs.dicom.dicomweb.json_model import Attributes, JsonAttributes
from ipacs.dicom.ingest import IngestBatch, Ingestor, IngestResult
from ipacs.dicom.status import PROCESSING_FAILURE, status_for
from ipacs.dicom.storage import FileStore, StagedFile
from ipacs.dicom.upload import MULTIPART, Upload, UploadLimits, media_type
from ipacs.errors import InvalidRequest, IpacsError, UnsupportedMediaType

SOURCE = "dicomweb stow-rs"


@dataclass(frozen=True)
class Uids:
    sop_class: str | None = None
    sop_instance: str | None = None
    series: str | None = None


@dataclass(frozen=True)
class Outcome:
    uids: Uids
    result: IngestResult | None = None
    failure_reason: int | None = None
    message: str = ""


def peek_uids(path: Path) -> Uids:
    """The UIDs a store response names, read before ingest consumes the file."""
    try:
        ds = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID"],
        )
    except Exception:  # untrusted bytes make pydicom raise anything; ingest reports why
        return Uids()
    meta = getattr(ds, "file_meta", None)

    def text(keyword: str, fallback: str | None = None) -> str | None:
        value = ds.get(keyword) or (meta.get(fallback) if meta is not None and fallback else None)
        return str(value).strip() or None if value else None

    return Uids(
        text("SOPClassUID", "MediaStorageSOPClassUID"),
        text("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        text("SeriesInstanceUID"),
    )


class RecordingIngestor(Ingestor):
    """The shared ingest path, noting each instance's UIDs and outcome for the response."""

    def __init__(self, database: Database, storage: FileStore) -> None:
        super().__init__(database, storage)
        self.outcomes: list[Outcome] = []

    def ingest(self, project_id: int, staged: StagedFile, batch: IngestBatch) -> IngestResult:
        uids = peek_uids(staged.path)
        try:
            result = super().ingest(project_id, staged, batch)
        except Exception as exc:
            # Upload decides which errors fail one instance and which are bugs;
            # here they are only noted, then passed on unchanged.
            message = exc.message if isinstance(exc, IpacsError) else f"could not be stored: {exc}"
            self.outcomes.append(
                Outcome(uids, failure_reason=status_for(exc) or PROCESSING_FAILURE, message=message)
            )
            raise
        self.outcomes.append(Outcome(uids, result=result))
        return result


def store(
    database: Database,
    storage: FileStore,
    project_id: int,
    limits: UploadLimits,
    content_type: str | None,
    body: Iterable[bytes],
) -> list[Outcome]:
    """Ingest a multipart/related body; the outcome of every part, in order."""
    if media_type(content_type)[0] != MULTIPART:
        raise UnsupportedMediaType('STOW-RS takes multipart/related; type="application/dicom"')
    recorder = RecordingIngestor(database, storage)
    upload = Upload(storage, recorder, project_id, limits)
    upload.batch = IngestBatch(source=SOURCE, channel="stow")
    # Every part reaches the ingestor, which records it; a body that cannot be
    # split into parts fails as a whole before any is stored.
    upload.run(content_type, body)
    return recorder.outcomes


def response(outcomes: list[Outcome], root: str) -> tuple[int, JsonAttributes]:
    """The HTTP status and the Store Instances Response for these outcomes."""
    if not outcomes:
        raise InvalidRequest(
            'The request holds no DICOM instance: send multipart/related; type="application/dicom" parts'
        )
    stored = [o for o in outcomes if o.result is not None]
    failed = [o for o in outcomes if o.result is None]
    studies = {o.result.study_instance_uid for o in stored if o.result is not None}
    attrs = Attributes().set("RetrieveURL", f"{root}/studies/{studies.pop()}" if len(studies) == 1 else None)
    if stored:
        attrs.sequence("ReferencedSOPSequence", (_referenced(o, root) for o in stored))
    if failed:
        attrs.sequence("FailedSOPSequence", (_failed(o) for o in failed))
    status = 200 if not failed else 202 if stored else 409
    return status, attrs.as_json()


def _referenced(outcome: Outcome, root: str) -> Attributes:
    assert outcome.result is not None
    result, uids = outcome.result, outcome.uids
    url = None
    if uids.series:
        study = f"{root}/studies/{result.study_instance_uid}"
        url = f"{study}/series/{uids.series}/instances/{result.sop_instance_uid}"
    return (
        Attributes()
        .set("ReferencedSOPClassUID", uids.sop_class)
        .set("ReferencedSOPInstanceUID", result.sop_instance_uid)
        .set("RetrieveURL", url)
    )


def _failed(outcome: Outcome) -> Attributes:
    return (
        Attributes()
        .set("ReferencedSOPClassUID", outcome.uids.sop_class)
        .set("ReferencedSOPInstanceUID", outcome.uids.sop_instance)
        .set("FailureReason", outcome.failure_reason)
        .set("ErrorComment", outcome.message)
    )
