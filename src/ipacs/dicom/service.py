"""Imaging rules for the HTTP side: who may upload, and what a study's files are."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ipacs.auth.caller import Caller
from ipacs.authz.access import require_role
from ipacs.authz.roles import Role
from ipacs.db.paging import Page, PageParams
from ipacs.dicom import repository
from ipacs.dicom.archive import ArchiveEntry, safe_name
from ipacs.models import Patient, Series, Study
from ipacs.studies.service import find_study


def check_upload(session: Session, caller: Caller, project_id: int) -> None:
    """Uploading creates patients and studies: `user` on the project."""
    require_role(session, caller, project_id, Role.USER)


def list_series(
    session: Session, caller: Caller, project_id: int, patient_pk: int, study_pk: int, params: PageParams
) -> Page[Series]:
    study = find_study(session, caller, project_id, patient_pk, study_pk)
    return repository.series_of_study(session, study.id, params)


def archive_plan(
    session: Session, caller: Caller, project_id: int, patient_pk: int, study_pk: int
) -> tuple[str, list[ArchiveEntry]]:
    """The zip's file name and its entries: PatientID/StudyUID/Series/SOPInstanceUID.dcm."""
    study: Study = find_study(session, caller, project_id, patient_pk, study_pk)
    patient = session.get(Patient, study.patient_id)
    assert patient is not None
    top = f"{safe_name(patient.patient_id, 'patient')}/{safe_name(study.study_instance_uid, 'study')}"
    entries = []
    for series, instance in repository.instances_of_study(session, study.id):
        folder = safe_name(
            f"{series.series_number or 0:03d}_{series.modality or ''}_{series.series_description or ''}",
            series.series_instance_uid,
        )
        name = f"{top}/{folder}/{safe_name(instance.sop_instance_uid, str(instance.id))}.dcm"
        entries.append(ArchiveEntry(name, instance.storage_key, instance.created_at))
    filename = (
        f"{safe_name(patient.patient_id, 'patient')}_{safe_name(study.study_instance_uid, 'study')}.zip"
    )
    return filename, entries
