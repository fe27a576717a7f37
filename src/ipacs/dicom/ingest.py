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
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from uuid import UUID

from pydantic import BaseModel, ValidationError
from sqlalchemy import ColumnElement, Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ipacs import clock
from ipacs.audit import service as audit
from ipacs.auth.caller import Caller
from ipacs.db.engine import Database
from ipacs.dicom.header import DicomHeader, InvalidDicom, read_header
from ipacs.dicom.removal import lock_storage_key
from ipacs.dicom.storage import FileStore, StagedFile
from ipacs.errors import AlreadyExists, Conflict
from ipacs.models import Instance, Patient, Project, Series, Study
from ipacs.patients.schemas import PatientEmpty
from ipacs.patients.service import register_patient
from ipacs.projects.scope import is_within
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


# The hot path reads and writes plain columns (no ORM objects): one C-STORE is a handful of
# indexed statements. ORM objects are made only when a patient or study is registered, through
# the same services the REST API uses.
_STUDY_COLUMNS = select(
    Study.id, Study.uuid, Study.study_instance_uid, Study.project_id, Study.patient_id, Study.modalities
)
_studies = cast(Table, Study.__table__)
_series_table = cast(Table, Series.__table__)
_instances = cast(Table, Instance.__table__)


@dataclass(frozen=True, slots=True)
class _StudyRow:
    id: int
    uuid: UUID
    study_instance_uid: str
    project_id: int
    patient_id: int
    modalities: str


def _study_row(session: Session, where: ColumnElement[bool], lock: bool = False) -> _StudyRow | None:
    stmt = _STUDY_COLUMNS.where(where)
    # Serialise ingest per study so counters and modalities never lose an update.
    row = session.execute(stmt.with_for_update() if lock else stmt).first()
    return _StudyRow(*row) if row is not None else None


def _patient(session: Session, project_id: int, header: DicomHeader, actor: Caller | None) -> int:
    found = session.scalar(
        select(Patient.id).where(Patient.project_id == project_id, Patient.patient_id == header.patient_id)
    )
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
    project = session.get(Project, project_id)
    assert project is not None
    return register_patient(session, actor, project, data).id


def _study(
    session: Session, project_id: int, patient_pk: int, header: DicomHeader, actor: Caller | None
) -> _StudyRow:
    uid = header.study_instance_uid
    study = _study_row(session, Study.study_instance_uid == uid, lock=True)
    if study is None:
        data = _lenient(
            StudyCreate,
            {
                "study_instance_uid": uid,
                "study_date": header.study_date,
                "study_time": header.study_time,
                "accession_number": header.accession_number,
                "description": header.study_description,
            },
        )
        patient = session.get(Patient, patient_pk)
        assert patient is not None
        created = register_study(session, actor, patient, data, project_id=project_id)
        study = _study_row(session, Study.id == created.id)
        assert study is not None
    elif study.patient_id != patient_pk:
        raise Conflict(f"Belongs to another patient or project: StudyInstanceUID {uid}")
    return study


def _series(session: Session, study: _StudyRow, header: DicomHeader, size: int) -> tuple[int, bool]:
    """The series id, and whether it was made here (with this instance already counted)."""
    found = session.execute(
        select(Series.id, Series.study_id).where(Series.series_instance_uid == header.series_instance_uid)
    ).first()
    if found is not None:
        if found.study_id != study.id:
            raise Conflict(f"Belongs to another study: SeriesInstanceUID {header.series_instance_uid}")
        session.execute(
            update(_series_table)
            .where(_series_table.c.id == found.id)
            .values(
                instance_count=_series_table.c.instance_count + 1,
                size_bytes=_series_table.c.size_bytes + size,
            )
        )
        return found.id, False
    created = session.execute(
        insert(_series_table)
        .values(
            study_id=study.id,
            series_instance_uid=header.series_instance_uid,
            modality=header.modality,
            series_number=header.series_number,
            series_description=header.series_description,
            body_part_examined=header.body_part_examined,
            instance_count=1,
            size_bytes=size,
        )
        .returning(_series_table.c.id)
    )
    return created.scalar_one(), True


def _count_in_study(
    session: Session, study: _StudyRow, header: DicomHeader, size: int, new_series: bool
) -> None:
    """The study's counters, as one UPDATE that also moves its ETag version on (as an ORM update does)."""
    values: dict[str, Any] = {
        "instance_count": _studies.c.instance_count + 1,
        "size_bytes": _studies.c.size_bytes + size,
        "version": _studies.c.version + 1,
        "updated_at": clock.now(),
    }
    if new_series:
        values["series_count"] = _studies.c.series_count + 1
        modalities = [m for m in study.modalities.split("\\") if m]
        if header.modality and header.modality not in modalities:
            values["modalities"] = "\\".join([*modalities, header.modality])
    session.execute(update(_studies).where(_studies.c.id == study.id).values(**values))


def _duplicate(session: Session, header: DicomHeader, staged: StagedFile) -> int | None:
    """The study of an instance stored before with the same bytes, if any."""
    existing = session.execute(
        select(Instance.sha256, Instance.study_id).where(Instance.sop_instance_uid == header.sop_instance_uid)
    ).first()
    if existing is None:
        return None
    if existing.sha256 != staged.sha256:
        raise ConflictingInstance(
            f"Different content already stored for SOPInstanceUID {header.sop_instance_uid}; "
            "the stored instance is kept"
        )
    return int(existing.study_id)


def store_instance(
    session: Session,
    storage: FileStore,
    project_id: int,
    staged: StagedFile,
    header: DicomHeader,
    batch: IngestBatch,
) -> tuple[IngestResult, str | None]:
    """Index one staged file and move it into the store. Returns the result and
    the key of the file it promoted (to remove if the commit fails)."""
    stored_in = _duplicate(session, header, staged)
    if stored_in is not None:
        study = _study_row(session, Study.id == stored_in)
        assert study is not None
        if not is_within(session, study.project_id, project_id):
            # Not ours to report: the sender may not read that project's study.
            raise Conflict(f"Already stored in another project: SOPInstanceUID {header.sop_instance_uid}")
        return IngestResult(
            "duplicate", study.id, str(study.uuid), study.study_instance_uid, header.sop_instance_uid
        ), None
    patient_pk = _patient(session, project_id, header, batch.actor)
    study = _study(session, project_id, patient_pk, header, batch.actor)
    series_id, new_series = _series(session, study, header, staged.size)
    key = storage.key_for(staged.sha256)
    session.execute(
        insert(_instances).values(
            study_id=study.id,
            series_id=series_id,
            sop_instance_uid=header.sop_instance_uid,
            sop_class_uid=header.sop_class_uid,
            instance_number=header.instance_number,
            transfer_syntax_uid=header.transfer_syntax_uid,
            size_bytes=staged.size,
            sha256=staged.sha256,
            storage_key=key,
        )
    )
    _count_in_study(session, study, header, staged.size, new_series)
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

    def ingest_received(self, project_id: int, path: Path, batch: IngestBatch) -> IngestResult:
        """Ingest a file written to the store's temp area by its receiver (a C-STORE)."""
        try:
            staged = self.storage.adopt(path)
        except BaseException:
            INGEST_FAILURES.labels(batch.channel).inc()
            path.unlink(missing_ok=True)
            raise
        return self.ingest(project_id, staged, batch)

    def ingest(self, project_id: int, staged: StagedFile, batch: IngestBatch) -> IngestResult:
        """Ingest a staged file; it is gone from the temp area afterwards, stored or not."""
        try:
            header = read_header(staged.path)
            for attempt in range(RETRIES):
                try:
                    result = self._ingest_once(project_id, staged, header, batch)
                except (IntegrityError, AlreadyExists):
                    # Another writer created the same patient/study/series first (seen as a
                    # unique violation, or by the registering service's own check after our
                    # lookup found nothing): the next attempt finds and uses it.
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
                if session.scalar(select(Project.id).where(Project.id == project_id)) is None:
                    raise Conflict("The project no longer exists")
                result, promoted = store_instance(session, self.storage, project_id, staged, header, batch)
        except BaseException:
            # The row did not commit: a file moved into the store for it must go.
            if promoted is not None:
                self.storage.delete(promoted)
            raise
        return result
