"""The one ingest path, used by every entry point: C-STORE, HTTP upload, STOW-RS.

For each file: read its header; answer a duplicate (same SOPInstanceUID and
bytes) without change and refuse a conflicting one (same UID, other bytes:
the original is kept); match or create the patient (PatientID within the
project) and the study, series and instance rows; move the file into the
store durably; and only then commit. The caller learns of success only
after the commit, so an acknowledged instance survives a crash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ipacs.audit import service as audit
from ipacs.auth.caller import Caller
from ipacs.db.engine import Database
from ipacs.dicom.header import DicomHeader, InvalidDicom, read_header
from ipacs.dicom.removal import lock_storage_key
from ipacs.dicom.storage import FileStore, StagedFile
from ipacs.errors import Conflict
from ipacs.models import Instance, Patient, Project, Series, Study
from ipacs.patients import repository as patient_repository
from ipacs.patients.schemas import PatientEmpty
from ipacs.patients.service import register_patient
from ipacs.projects.scope import is_within
from ipacs.studies import repository as study_repository
from ipacs.studies.schemas import StudyCreate
from ipacs.studies.service import register_study
from ipacs.telemetry.metrics import DICOM_INSTANCES, INGEST_FAILURES

log = logging.getLogger("ipacs.dicom.ingest")
RETRIES = 3
# Refusals name their reason first: a C-STORE ErrorComment keeps only 64 characters.


class ConflictingInstance(Conflict):
    """The SOPInstanceUID is stored with other bytes; the stored instance is kept."""


@dataclass(frozen=True)
class IngestResult:
    status: Literal["stored", "duplicate"]
    study_id: int
    study_uuid: str
    study_instance_uid: str
    sop_instance_uid: str


@dataclass
class IngestBatch:
    """What one request or association has done so far: one audit event per study."""

    source: str
    # "c-store", "http" or "stow": a metrics label, so a few values only.
    channel: str = "http"
    # Who sends (HTTP and STOW-RS); None for C-STORE, whose sender is an AE title in `source`.
    actor: Caller | None = None
    audited_studies: set[int] = field(default_factory=set)
    stored: int = 0
    duplicates: int = 0


M = TypeVar("M", bound=BaseModel)


def _lenient(model: type[M], data: dict[str, object]) -> M:
    """Validate, dropping optional fields that do not fit (DICOM headers are often untidy)."""
    while True:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            droppable = bad - {"patient_id", "study_instance_uid"}
            if not droppable or droppable == bad - set(data):
                # What identifies the file does not fit: the file is refused, with the reason.
                reasons = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors() if e["loc"])
                raise InvalidDicom(f"DICOM attributes not acceptable: {reasons}") from exc
            data = {k: v for k, v in data.items() if k not in droppable}


def _patient(session: Session, project: Project, header: DicomHeader, actor: Caller | None) -> Patient:
    found = patient_repository.find_in_project(session, project.id, header.patient_id)
    if found is not None:
        return found
    data = _lenient(
        PatientEmpty,
        {
            "patient_id": header.patient_id,
            "patient_name": header.patient_name,
            "birth_date": header.birth_date,
            "sex": header.sex,
        },
    )
    return register_patient(session, actor, project, data)


def _study(
    session: Session, project: Project, patient: Patient, header: DicomHeader, actor: Caller | None
) -> Study:
    study = study_repository.get_by_uid(session, header.study_instance_uid)
    if study is None:
        data = _lenient(
            StudyCreate,
            {
                "study_instance_uid": header.study_instance_uid,
                "study_date": header.study_date,
                "study_time": header.study_time,
                "accession_number": header.accession_number,
                "description": header.study_description,
            },
        )
        study = register_study(session, actor, patient, data, project_id=project.id)
    elif study.patient_id != patient.id:
        raise Conflict(f"Belongs to another patient or project: StudyInstanceUID {header.study_instance_uid}")
    # Serialise ingest per study so counters and modalities never lose an update.
    locked = session.scalars(select(Study).where(Study.id == study.id).with_for_update()).one()
    return locked


def _series(session: Session, study: Study, header: DicomHeader) -> Series:
    series = session.scalars(
        select(Series).where(Series.series_instance_uid == header.series_instance_uid)
    ).first()
    if series is not None:
        if series.study_id != study.id:
            raise Conflict(f"Belongs to another study: SeriesInstanceUID {header.series_instance_uid}")
        return series
    series = Series(
        study_id=study.id,
        series_instance_uid=header.series_instance_uid,
        modality=header.modality,
        series_number=header.series_number,
        series_description=header.series_description,
        body_part_examined=header.body_part_examined,
    )
    session.add(series)
    study.series_count += 1
    modalities = [m for m in study.modalities.split("\\") if m]
    if header.modality and header.modality not in modalities:
        study.modalities = "\\".join([*modalities, header.modality])
    return series


def _duplicate(session: Session, header: DicomHeader, staged: StagedFile) -> Instance | None:
    existing = session.scalars(
        select(Instance).where(Instance.sop_instance_uid == header.sop_instance_uid)
    ).first()
    if existing is not None and existing.sha256 != staged.sha256:
        raise ConflictingInstance(
            f"Different content already stored for SOPInstanceUID {header.sop_instance_uid}; "
            "the stored instance is kept"
        )
    return existing


def store_instance(
    session: Session,
    storage: FileStore,
    project: Project,
    staged: StagedFile,
    header: DicomHeader,
    batch: IngestBatch,
) -> tuple[IngestResult, str | None]:
    """Index one staged file and move it into the store. Returns the result and
    the key of the file it promoted (to remove if the commit fails)."""
    existing = _duplicate(session, header, staged)
    if existing is not None:
        study = session.get(Study, existing.study_id)
        assert study is not None
        if not is_within(session, study.project_id, project.id):
            # Not ours to report: the sender may not read that project's study.
            raise Conflict(f"Already stored in another project: SOPInstanceUID {header.sop_instance_uid}")
        return IngestResult(
            "duplicate", study.id, str(study.uuid), study.study_instance_uid, header.sop_instance_uid
        ), None
    patient = _patient(session, project, header, batch.actor)
    study = _study(session, project, patient, header, batch.actor)
    series = _series(session, study, header)
    session.flush()
    key = storage.key_for(staged.sha256)
    session.add(
        Instance(
            study_id=study.id,
            series_id=series.id,
            sop_instance_uid=header.sop_instance_uid,
            sop_class_uid=header.sop_class_uid,
            instance_number=header.instance_number,
            transfer_syntax_uid=header.transfer_syntax_uid,
            size_bytes=staged.size,
            sha256=staged.sha256,
            storage_key=key,
        )
    )
    series.instance_count += 1
    series.size_bytes += staged.size
    study.instance_count += 1
    study.size_bytes += staged.size
    if study.id not in batch.audited_studies:
        audit.record(
            session,
            batch.actor,
            "receive",
            "study",
            entity_id=study.id,
            entity_uuid=study.uuid,
            project_id=study.project_id,
            after={"source": batch.source},
        )
    session.flush()  # uniqueness races surface here, before the file moves
    # Held to the commit: a deletion's file removal cannot interleave (see removal.py).
    lock_storage_key(session, key)
    storage.promote(staged)
    return IngestResult(
        "stored", study.id, str(study.uuid), study.study_instance_uid, header.sop_instance_uid
    ), key


class Ingestor:
    """Runs `store_instance` in its own transaction per file, with retries on races."""

    def __init__(self, database: Database, storage: FileStore) -> None:
        self.database = database
        self.storage = storage

    def ingest(self, project_id: int, staged: StagedFile, batch: IngestBatch) -> IngestResult:
        try:
            header = read_header(staged.path)
            for attempt in range(RETRIES):
                try:
                    result = self._ingest_once(project_id, staged, header, batch)
                except IntegrityError:
                    # Another writer created the same patient/study/series first:
                    # the next attempt finds and uses it.
                    if attempt == RETRIES - 1:
                        raise
                    continue
                DICOM_INSTANCES.labels(batch.channel, result.status).inc()
                if result.status == "stored":
                    batch.stored += 1
                    batch.audited_studies.add(result.study_id)
                else:
                    batch.duplicates += 1
                return result
            raise AssertionError("unreachable")
        except BaseException:
            INGEST_FAILURES.labels(batch.channel).inc()
            raise
        finally:
            self.storage.discard(staged)

    def _ingest_once(
        self, project_id: int, staged: StagedFile, header: DicomHeader, batch: IngestBatch
    ) -> IngestResult:
        promoted: str | None = None
        try:
            with self.database.session(write=True) as session, session.begin():
                project = session.get(Project, project_id)
                if project is None:
                    raise Conflict("The project no longer exists")
                result, promoted = store_instance(session, self.storage, project, staged, header, batch)
        except BaseException:
            # The row did not commit: a file moved into the store for it must go.
            if promoted is not None:
                self.storage.delete(promoted)
            raise
        return result
