"""Study queries."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from ipacs.db.paging import Page, PageParams, fetch_page
from ipacs.models import ProjectClosure, Study


def get(session: Session, study_pk: int) -> Study | None:
    return session.scalars(
        select(Study).options(joinedload(Study.creator)).where(Study.id == study_pk)
    ).first()


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
