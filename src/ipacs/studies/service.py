"""Study rules: a study belongs to one patient and lives in the patient's project subtree."""

from __future__ import annotations

from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy.orm import Session

from ipacs.audit import service as audit
from ipacs.auth.caller import Caller
from ipacs.authz.access import check_role, require_role
from ipacs.authz.roles import Role
from ipacs.db.paging import Page, PageParams
from ipacs.errors import AlreadyExists, InvalidRequest, NotFound
from ipacs.etags import check_if_match
from ipacs.models import Patient, Project, Study
from ipacs.patients.service import find_patient, read_patient
from ipacs.projects.scope import is_within
from ipacs.studies import repository
from ipacs.studies.schemas import StudyCreate, StudyUpdate

AUDITED_FIELDS = (
    "study_instance_uid",
    "project_id",
    "accession_number",
    "study_date",
    "study_time",
    "description",
    "modalities",
    "visit",
    "status",
)


def list_studies(
    session: Session, caller: Caller, project_id: int, patient_pk: int, params: PageParams
) -> Page[Study]:
    """The patient's studies in the route's project and its subprojects."""
    find_patient(session, caller, project_id, patient_pk)
    return repository.list_for_patient(session, patient_pk, project_id, params)


def find_study(
    session: Session,
    caller: Caller,
    project_id: int,
    patient_pk: int,
    study_pk: int,
    needed: Role = Role.VIEWER,
) -> Study:
    find_patient(session, caller, project_id, patient_pk)
    study = repository.get(session, study_pk)
    if (
        study is None
        or study.patient_id != patient_pk
        or not is_within(session, study.project_id, project_id)
    ):
        raise NotFound(f"No study {study_pk} of patient {patient_pk} in project {project_id}")
    if needed > Role.VIEWER:
        project = session.get(Project, study.project_id)
        assert project is not None
        check_role(session, caller, project, needed, "Changing this study")
    return study


def read_study(
    session: Session, caller: Caller, project_id: int, patient_pk: int, study_pk: int
) -> repository.StudyView:
    """`find_study` for reading: the same 404s, three indexed queries, no ORM objects."""
    read_patient(session, caller, project_id, patient_pk)
    study = repository.view_within(session, study_pk, patient_pk, project_id)
    if study is None:
        raise NotFound(f"No study {study_pk} of patient {patient_pk} in project {project_id}")
    return study


def _study_project(session: Session, caller: Caller | None, patient: Patient, project_id: int | None) -> int:
    """The project a study goes to: the patient's, or one of its subprojects."""
    if project_id is None or project_id == patient.project_id:
        return patient.project_id
    if caller is not None:
        require_role(session, caller, project_id, Role.USER)
    if not is_within(session, project_id, patient.project_id):
        raise InvalidRequest(
            "A study lives in its patient's project or one of its subprojects",
            details=[{"field": "project_id", "message": "not in the patient's project subtree"}],
        )
    return project_id


def _fields(data: StudyCreate | StudyUpdate) -> dict[str, Any]:
    fields = data.model_dump(exclude_unset=True)
    if "modalities" in fields:
        fields["modalities"] = "\\".join(fields["modalities"] or [])
    if fields.get("study_time"):
        fields["study_time"] = _normalise_time(fields["study_time"])
    return fields


def _normalise_time(text: str) -> str:
    """HHMMSS or HH:MM:SS -> HH:MM:SS[.ffffff]."""
    digits, _, fraction = text.replace(":", "").partition(".")
    digits = digits.ljust(6, "0")
    normal = f"{digits[0:2]}:{digits[2:4]}:{digits[4:6]}"
    return f"{normal}.{fraction}" if fraction else normal


def register_study(
    session: Session, actor: Caller | None, patient: Patient, data: StudyCreate, project_id: int | None = None
) -> Study:
    """The one way a study comes to exist (API and DICOM ingest); audited."""
    fields = _fields(data)
    uid = fields.pop("study_instance_uid", None) or generate_uid()
    if repository.get_by_uid(session, uid) is not None:
        raise AlreadyExists(f"A study with StudyInstanceUID {uid} already exists")
    fields["project_id"] = _study_project(session, actor, patient, fields.get("project_id", project_id))
    study = Study(
        study_instance_uid=uid, patient_id=patient.id, creator_id=actor.id if actor else None, **fields
    )
    session.add(study)
    session.flush()
    audit.record(
        session,
        actor,
        "create",
        "study",
        entity_id=study.id,
        entity_uuid=study.uuid,
        project_id=study.project_id,
        after=audit.snapshot(study, AUDITED_FIELDS),
    )
    return study


def create_study(
    session: Session, caller: Caller, project_id: int, patient_pk: int, data: StudyCreate
) -> Study:
    patient = find_patient(session, caller, project_id, patient_pk, Role.USER)
    return register_study(session, caller, patient, data)


def update_study(
    session: Session,
    caller: Caller,
    project_id: int,
    patient_pk: int,
    study_pk: int,
    data: StudyUpdate,
    if_match: str | None,
) -> Study:
    study = find_study(session, caller, project_id, patient_pk, study_pk, Role.USER)
    check_if_match(study, if_match)
    fields = _fields(data)
    if "project_id" in fields:
        patient = session.get(Patient, study.patient_id)
        assert patient is not None
        fields["project_id"] = _study_project(session, caller, patient, fields["project_id"])
    before = audit.snapshot(study, AUDITED_FIELDS)
    for name, value in fields.items():
        setattr(study, name, value)
    session.flush()
    old, new = audit.changed_fields(before, audit.snapshot(study, AUDITED_FIELDS))
    if new:
        audit.record(
            session,
            caller,
            "update",
            "study",
            entity_id=study.id,
            entity_uuid=study.uuid,
            project_id=study.project_id,
            before=old,
            after=new,
        )
    found = repository.get(session, study.id)
    assert found is not None
    return found


def delete_study(
    session: Session, caller: Caller, project_id: int, patient_pk: int, study_pk: int, if_match: str | None
) -> repository.DeletedImaging:
    """Delete a study with its series and instance rows (managers); audited.

    The stored files are not touched here: the caller removes `files` once
    the transaction has committed (see `ipacs.dicom.removal`).
    """
    study = find_study(session, caller, project_id, patient_pk, study_pk)
    project = session.get(Project, study.project_id)
    assert project is not None
    check_role(session, caller, project, Role.MANAGER, "Deleting this study")
    check_if_match(study, if_match)
    before = audit.snapshot(study, AUDITED_FIELDS)
    study_id, study_uuid = study.id, study.uuid
    deleted = repository.delete_studies(session, Study.id == study_id)
    audit.record(
        session,
        caller,
        "delete",
        "study",
        entity_id=study_id,
        entity_uuid=study_uuid,
        project_id=project.id,
        before=before,
        after={"deleted": deleted.counts()},
    )
    return deleted
