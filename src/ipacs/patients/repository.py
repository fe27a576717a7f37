"""Patient queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

from sqlalchemy import ColumnElement, Select, delete, func, or_, select
from sqlalchemy.orm import Session, joinedload

from ipacs.db.like import LIKE_ESCAPE, contains_pattern
from ipacs.db.paging import Page, PageParams, fetch_page
from ipacs.models import DatapointValue, DatapointValueVersion, Patient, ProjectClosure, User

PatientSort = Literal["id", "patient_id", "-patient_id", "created_at", "-created_at"]


def get(session: Session, patient_pk: int) -> Patient | None:
    return session.scalars(
        select(Patient).options(joinedload(Patient.creator)).where(Patient.id == patient_pk)
    ).first()


def get_by_uuid(session: Session, patient_uuid: UUID) -> Patient | None:
    return session.scalars(
        select(Patient).options(joinedload(Patient.creator)).where(Patient.uuid == patient_uuid)
    ).first()


@dataclass(frozen=True, slots=True)
class CreatorView:
    id: int
    username: str
    full_name: str


@dataclass(frozen=True, slots=True)
class PatientView:
    """A patient as read for a response: plain columns, no ORM object (GET is the hot path)."""

    id: int
    uuid: UUID
    project_id: int
    patient_id: str
    patient_name: str | None
    birth_date: date | None
    sex: str | None
    created_at: datetime
    updated_at: datetime
    version: int
    creator: CreatorView | None


_AUTHOR_FIELDS = ("id", "username", "full_name")


def author_columns(user: Any, role: str) -> tuple[Any, ...]:
    """A user's columns labelled `{role}_id`, `{role}_username`, `{role}_full_name` (`user`:
    `User`, or an alias of it when a row names two users)."""
    return tuple(getattr(user, name).label(f"{role}_{name}") for name in _AUTHOR_FIELDS)


CREATOR_COLUMNS = author_columns(User, "creator")


def creator_view(columns: dict[str, Any], role: str = "creator") -> CreatorView | None:
    """The user from a row's `author_columns(..., role)` (taken out of `columns`)."""
    pk, username, full_name = (columns.pop(f"{role}_{name}") for name in _AUTHOR_FIELDS)
    return CreatorView(pk, username, full_name) if pk is not None else None


def in_subtree(project_id: int) -> Select[int]:
    return select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == project_id)


_PATIENT_VIEW = select(
    Patient.id,
    Patient.uuid,
    Patient.project_id,
    Patient.patient_id,
    Patient.patient_name,
    Patient.birth_date,
    Patient.sex,
    Patient.created_at,
    Patient.updated_at,
    Patient.version,
    *CREATOR_COLUMNS,
).outerjoin(User, User.id == Patient.creator_id)


def view_within(session: Session, patient_pk: int, project_id: int) -> PatientView | None:
    """The patient if it lives in the project's subtree."""
    row = session.execute(
        _PATIENT_VIEW.where(Patient.id == patient_pk, Patient.project_id.in_(in_subtree(project_id)))
    ).first()
    if row is None:
        return None
    columns = dict(row._mapping)
    creator = creator_view(columns)
    return PatientView(**columns, creator=creator)


def find_in_project(session: Session, project_id: int, patient_id: str) -> Patient | None:
    return session.scalars(
        select(Patient).where(Patient.project_id == project_id, Patient.patient_id == patient_id)
    ).first()


def list_patients(
    session: Session,
    project_id: int,
    params: PageParams,
    *,
    recursive: bool,
    patient_id: str | None,
    search: str | None,
    sort: PatientSort,
) -> Page[Patient]:
    where: ColumnElement[bool]
    if recursive:
        subtree = select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == project_id)
        where = Patient.project_id.in_(subtree)
    else:
        where = Patient.project_id == project_id
    stmt = select(Patient).options(joinedload(Patient.creator)).where(where)
    if patient_id is not None:
        stmt = stmt.where(Patient.patient_id == patient_id)
    if search:
        pattern = contains_pattern(search)
        stmt = stmt.where(
            or_(
                func.lower(Patient.patient_id).like(pattern, escape=LIKE_ESCAPE),
                func.lower(func.coalesce(Patient.patient_name, "")).like(pattern, escape=LIKE_ESCAPE),
            )
        )
    order = {
        "id": (),
        "patient_id": (Patient.patient_id.asc(),),
        "-patient_id": (Patient.patient_id.desc(),),
        "created_at": (Patient.created_at.asc(),),
        "-created_at": (Patient.created_at.desc(),),
    }[sort]
    return fetch_page(session, stmt, Patient.id, params, order_by=order)


def delete_patient_values(session: Session, patient_pk: int) -> int:
    """Delete a patient's datapoint values and their history; returns how many values went."""
    values = select(DatapointValue.id).where(DatapointValue.patient_id == patient_pk)
    count = session.scalar(select(func.count()).select_from(values.subquery())) or 0
    session.execute(delete(DatapointValueVersion).where(DatapointValueVersion.value_id.in_(values)))
    session.execute(delete(DatapointValue).where(DatapointValue.patient_id == patient_pk))
    return count


def delete_patient_row(session: Session, patient_pk: int) -> None:
    session.execute(delete(Patient).where(Patient.id == patient_pk))
