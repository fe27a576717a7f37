"""Study queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from uuid import UUID

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session, joinedload

from ipacs.db.paging import Page, PageParams, fetch_page
from ipacs.dicom.removal import StoredFile
from ipacs.models import Instance, ProjectClosure, Series, Study, User
from ipacs.patients.repository import CREATOR_COLUMNS, CreatorView, creator_view, in_subtree


def get(session: Session, study_pk: int) -> Study | None:
    return session.scalars(
        select(Study).options(joinedload(Study.creator)).where(Study.id == study_pk)
    ).first()


@dataclass(frozen=True, slots=True)
class StudyView:
    """A study as read for a response: plain columns, no ORM object (GET is the hot path)."""

    id: int
    uuid: UUID
    study_instance_uid: str
    patient_id: int
    project_id: int
    accession_number: str | None
    study_date: date | None
    study_time: str | None
    description: str | None
    modalities: str
    visit: str | None
    status: str | None
    series_count: int
    instance_count: int
    size_bytes: int
    created_at: datetime
    updated_at: datetime
    version: int
    creator: CreatorView | None


_STUDY_VIEW = select(
    Study.id,
    Study.uuid,
    Study.study_instance_uid,
    Study.patient_id,
    Study.project_id,
    Study.accession_number,
    Study.study_date,
    Study.study_time,
    Study.description,
    Study.modalities,
    Study.visit,
    Study.status,
    Study.series_count,
    Study.instance_count,
    Study.size_bytes,
    Study.created_at,
    Study.updated_at,
    Study.version,
    *CREATOR_COLUMNS,
).outerjoin(User, User.id == Study.creator_id)


def view_within(session: Session, study_pk: int, patient_pk: int, project_id: int) -> StudyView | None:
    """The patient's study if it lives in the project's subtree."""
    row = session.execute(
        _STUDY_VIEW.where(
            Study.id == study_pk, Study.patient_id == patient_pk, Study.project_id.in_(in_subtree(project_id))
        )
    ).first()
    if row is None:
        return None
    columns = dict(row._mapping)
    creator = creator_view(columns)
    return StudyView(**columns, creator=creator)


def get_by_uid(session: Session, study_instance_uid: str) -> Study | None:
    return session.scalars(select(Study).where(Study.study_instance_uid == study_instance_uid)).first()


def list_for_patient(
    session: Session, patient_pk: int, project_id: int | None, params: PageParams | None = None
) -> Page[Study]:
    """The patient's studies, within a project subtree when `project_id` is given."""
    stmt = select(Study).options(joinedload(Study.creator)).where(Study.patient_id == patient_pk)
    if project_id is not None:
        subtree = select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == project_id)
        stmt = stmt.where(Study.project_id.in_(subtree))
    return fetch_page(session, stmt, Study.id, params or PageParams(limit=10_000))


def outside_subtree(session: Session, patient_pk: int, project_id: int) -> list[Study]:
    """The patient's studies that live outside the project's subtree."""
    subtree = select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == project_id)
    stmt = select(Study).where(Study.patient_id == patient_pk, Study.project_id.not_in(subtree))
    return list(session.scalars(stmt.order_by(Study.id)))


@dataclass
class DeletedImaging:
    """What deleting studies removed from the database, and the files to remove after the commit."""

    studies: int = 0
    series: int = 0
    instances: int = 0
    size_bytes: int = 0
    study_instance_uids: list[str] = field(default_factory=list)
    files: list[StoredFile] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "studies": self.studies,
            "series": self.series,
            "instances": self.instances,
            "size_bytes": self.size_bytes,
        }


def delete_studies(session: Session, which: ColumnElement[bool]) -> DeletedImaging:
    """Delete the studies matching `which` with their series and instance rows (not their files)."""
    study_ids = select(Study.id).where(which).scalar_subquery()
    deleted = DeletedImaging(
        study_instance_uids=list(session.scalars(select(Study.study_instance_uid).where(which))),
    )
    deleted.studies = len(deleted.study_instance_uids)
    if not deleted.studies:
        return deleted
    deleted.series = (
        session.scalar(select(func.count()).select_from(Series).where(Series.study_id.in_(study_ids))) or 0
    )
    instances, size = session.execute(
        select(func.count(), func.coalesce(func.sum(Instance.size_bytes), 0)).where(
            Instance.study_id.in_(study_ids)
        )
    ).one()
    deleted.instances, deleted.size_bytes = int(instances), int(size)
    deleted.files = [
        StoredFile(sha256, key)
        for sha256, key in session.execute(
            select(Instance.sha256, Instance.storage_key).where(Instance.study_id.in_(study_ids)).distinct()
        )
    ]
    session.execute(delete(Instance).where(Instance.study_id.in_(study_ids)))
    session.execute(delete(Series).where(Series.study_id.in_(study_ids)))
    session.execute(delete(Study).where(Study.id.in_(study_ids)))
    return deleted
