"""Patient rules: visibility down the tree, user role to write, moves between projects.

A patient lives in one project and is visible there and in every ancestor.
Reading needs any role on the route's project; writing needs `user` on the
patient's own project (roles inherit downward, so a user of an ancestor has it).
"""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.orm import Session

from ipacs.audit import service as audit
from ipacs.auth.caller import Caller
from ipacs.authz.access import check_role, effective_role, require_readable, require_role
from ipacs.authz.roles import Role
from ipacs.datapoints import repository as datapoint_repository
from ipacs.db.paging import Page, PageParams
from ipacs.errors import AlreadyExists, Conflict, NotFound
from ipacs.etags import check_if_match
from ipacs.models import Patient, Project, Study
from ipacs.patients import repository
from ipacs.patients.repository import PatientSort
from ipacs.patients.schemas import PatientEmpty, PatientUpdate
from ipacs.projects.repository import ancestor_ids
from ipacs.projects.scope import is_within
from ipacs.studies import repository as study_repository

AUDITED_FIELDS = ("project_id", "patient_id", "patient_name", "birth_date", "sex")


def find_patient(
    session: Session, caller: Caller, project_id: int, patient_pk: int, needed: Role = Role.VIEWER
) -> Patient:
    """A patient seen through a project route: 404 unless it lives in that project's subtree."""
    require_role(session, caller, project_id, Role.VIEWER)
    patient = repository.get(session, patient_pk)
    if patient is None or not is_within(session, patient.project_id, project_id):
        raise NotFound(f"No patient {patient_pk} in project {project_id}")
    _check_write(session, caller, patient, needed)
    return patient


def read_patient(
    session: Session, caller: Caller, project_id: int, patient_pk: int
) -> repository.PatientView:
    """`find_patient` for reading: the same 404s, two indexed queries, no ORM objects."""
    require_readable(session, caller, project_id)
    patient = repository.view_within(session, patient_pk, project_id)
    if patient is None:
        raise NotFound(f"No patient {patient_pk} in project {project_id}")
    return patient


def find_patient_by_uuid(
    session: Session,
    caller: Caller,
    patient_uuid: UUID,
    needed: Role = Role.VIEWER,
    project_id: int | None = None,
) -> Patient:
    """A patient by UUID, through a project route or wherever it lives.

    A patient the caller cannot read answers the same 404 as a UUID that does
    not exist, so that a UUID never tells whether it is in use.
    """
    if project_id is not None:
        require_role(session, caller, project_id, Role.VIEWER)
    patient = repository.get_by_uuid(session, patient_uuid)
    if patient is not None and project_id is not None:
        visible = is_within(session, patient.project_id, project_id)
    else:
        visible = patient is not None and effective_role(session, caller, patient.project_id) is not None
    if patient is None or not visible:
        raise NotFound(f"No patient {patient_uuid}")
    _check_write(session, caller, patient, needed)
    return patient


def _check_write(session: Session, caller: Caller, patient: Patient, needed: Role) -> None:
    if needed > Role.VIEWER:
        project = session.get(Project, patient.project_id)
        assert project is not None
        check_role(session, caller, project, needed, "Changing this patient")


def list_patients(
    session: Session,
    caller: Caller,
    project_id: int,
    params: PageParams,
    *,
    recursive: bool,
    patient_id: str | None,
    search: str | None,
    sort: PatientSort,
) -> Page[Patient]:
    require_role(session, caller, project_id, Role.VIEWER)
    return repository.list_patients(
        session, project_id, params, recursive=recursive, patient_id=patient_id, search=search, sort=sort
    )


def register_patient(session: Session, actor: Caller | None, project: Project, data: PatientEmpty) -> Patient:
    """The one way a patient comes to exist (API, DICOM ingest, import); audited.

    Permission checks are the caller's: `create_patient` for the API, the
    ingest entry points for DICOM.
    """
    if repository.find_in_project(session, project.id, data.patient_id) is not None:
        raise AlreadyExists(f"Patient {data.patient_id!r} already exists in project {project.name!r}")
    patient = Patient(project_id=project.id, creator_id=actor.id if actor else None, **data.model_dump())
    session.add(patient)
    session.flush()
    audit.record(
        session,
        actor,
        "create",
        "patient",
        entity_id=patient.id,
        entity_uuid=patient.uuid,
        project_id=project.id,
        after=audit.snapshot(patient, AUDITED_FIELDS),
    )
    return patient


def create_patient(session: Session, caller: Caller, project_id: int, data: PatientEmpty) -> Patient:
    project = require_role(session, caller, project_id, Role.USER)
    patient = register_patient(session, caller, project, data)
    found = repository.get(session, patient.id)
    assert found is not None
    return found


def update_patient(
    session: Session, caller: Caller, patient: Patient, data: PatientUpdate, if_match: str | None
) -> Patient:
    """Partial update; `project_id` moves the patient where the caller is `user` at both ends."""
    check_if_match(patient, if_match)
    fields = data.model_dump(exclude_unset=True)
    before = audit.snapshot(patient, AUDITED_FIELDS)
    target = fields.get("project_id") or patient.project_id
    if target != patient.project_id:
        _check_move(session, caller, patient, target)
    fields["project_id"] = target
    new_id = fields.get("patient_id", patient.patient_id)
    if (new_id, target) != (patient.patient_id, patient.project_id):
        existing = repository.find_in_project(session, target, new_id)
        if existing is not None and existing.id != patient.id:
            raise Conflict(f"Patient {new_id!r} already exists in project {target}")
    old_project = patient.project_id
    for name, value in fields.items():
        setattr(patient, name, value)
    session.flush()
    if target != old_project:
        _studies_follow(session, caller, patient)
    old, new = audit.changed_fields(before, audit.snapshot(patient, AUDITED_FIELDS))
    if new:
        audit.record(
            session,
            caller,
            "update",
            "patient",
            entity_id=patient.id,
            entity_uuid=patient.uuid,
            project_id=patient.project_id,
            before=old,
            after=new,
        )
    found = repository.get(session, patient.id)
    assert found is not None
    return found


def _studies_follow(session: Session, caller: Caller, patient: Patient) -> None:
    """Studies stay within the patient's subtree: those outside follow it to its new project.

    Each is updated through the ORM (not a bulk UPDATE) so that its version, and
    so its ETag, changes and the move is in the audit log like any study update.
    """
    for study in study_repository.outside_subtree(session, patient.id, patient.project_id):
        before = study.project_id
        study.project_id = patient.project_id
        session.flush()
        audit.record(
            session,
            caller,
            "update",
            "study",
            entity_id=study.id,
            entity_uuid=study.uuid,
            project_id=study.project_id,
            before={"project_id": before},
            after={"project_id": study.project_id},
        )


def _check_move(session: Session, caller: Caller, patient: Patient, target_id: int) -> None:
    require_role(session, caller, target_id, Role.USER)
    kept = set(ancestor_ids(session, target_id))
    lost = set(ancestor_ids(session, patient.project_id)) - kept
    orphaned = datapoint_repository.count_patient_values_of(session, patient.id, lost)
    if orphaned:
        raise Conflict(
            f"{orphaned} datapoint values of this patient belong to datapoints that do not apply "
            "in the target project"
        )


def delete_patient(
    session: Session, caller: Caller, project_id: int, patient_pk: int, if_match: str | None
) -> study_repository.DeletedImaging:
    """Delete a patient with its studies, series, instances and datapoint values (managers); audited.

    The stored files are not touched here: the caller removes `files` once
    the transaction has committed (see `ipacs.dicom.removal`).
    """
    patient = find_patient(session, caller, project_id, patient_pk)
    project = session.get(Project, patient.project_id)
    assert project is not None
    check_role(session, caller, project, Role.MANAGER, "Deleting this patient")
    check_if_match(patient, if_match)
    before = audit.snapshot(patient, AUDITED_FIELDS)
    patient_pk, patient_uuid = patient.id, patient.uuid
    values = repository.delete_patient_values(session, patient_pk)
    deleted = study_repository.delete_studies(session, Study.patient_id == patient_pk)
    repository.delete_patient_row(session, patient_pk)
    audit.record(
        session,
        caller,
        "delete",
        "patient",
        entity_id=patient_pk,
        entity_uuid=patient_uuid,
        project_id=project.id,
        before=before,
        after={
            "deleted": {**deleted.counts(), "datapoint_values": values},
            "study_instance_uids": deleted.study_instance_uids,
        },
    )
    return deleted
