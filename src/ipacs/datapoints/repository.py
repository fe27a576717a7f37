"""Datapoint definition queries: lineage lookups and value counts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.orm import Session, joinedload

from ipacs.db.like import LIKE_ESCAPE, contains_pattern
from ipacs.db.paging import Page, PageParams, fetch_page
from ipacs.models import Datapoint, DatapointValue, DatapointValueVersion, Patient, ProjectClosure


def applicable(project_id: int) -> Select[Datapoint]:
    """Definitions that apply in a project: its own and its ancestors'."""
    lineage = select(ProjectClosure.ancestor_id).where(ProjectClosure.descendant_id == project_id)
    return select(Datapoint).where(Datapoint.project_id.in_(lineage))


def list_applicable(
    session: Session, project_id: int, params: PageParams, search: str | None
) -> Page[Datapoint]:
    stmt = applicable(project_id).options(joinedload(Datapoint.creator))
    if search:
        pattern = contains_pattern(search)
        stmt = stmt.where(
            or_(
                Datapoint.name_key.like(pattern, escape=LIKE_ESCAPE),
                func.lower(func.coalesce(Datapoint.label, "")).like(pattern, escape=LIKE_ESCAPE),
                func.lower(func.coalesce(Datapoint.description, "")).like(pattern, escape=LIKE_ESCAPE),
            )
        )
    return fetch_page(session, stmt, Datapoint.id, params)


def all_applicable(session: Session, project_id: int) -> list[Datapoint]:
    stmt = applicable(project_id).options(joinedload(Datapoint.creator)).order_by(Datapoint.id)
    return list(session.scalars(stmt))


def get(session: Session, datapoint_id: int) -> Datapoint | None:
    return session.scalars(
        select(Datapoint).options(joinedload(Datapoint.creator)).where(Datapoint.id == datapoint_id)
    ).first()


def name_taken_in_lineage(session: Session, project_id: int, name_key: str, exclude_id: int | None) -> bool:
    """Is the name used on the project, an ancestor or a descendant (case-insensitive)?"""
    lineage = (
        select(ProjectClosure.ancestor_id)
        .where(ProjectClosure.descendant_id == project_id)
        .union(select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == project_id))
    )
    stmt = select(Datapoint.id).where(Datapoint.name_key == name_key, Datapoint.project_id.in_(lineage))
    if exclude_id is not None:
        stmt = stmt.where(Datapoint.id != exclude_id)
    return session.scalar(stmt.limit(1)) is not None


def name_clashes(session: Session, subtree: Iterable[int], ancestors: Iterable[int]) -> set[str]:
    """Names defined both inside `subtree` and on one of `ancestors`."""
    inside = select(Datapoint.name_key).where(Datapoint.project_id.in_(list(subtree)))
    rows = session.scalars(
        select(Datapoint.name).where(
            Datapoint.project_id.in_(list(ancestors)), Datapoint.name_key.in_(inside)
        )
    )
    return set(rows)


def count_values_of(
    session: Session, patient_projects: Iterable[int], datapoint_projects: Iterable[int]
) -> int:
    """Values held by patients of `patient_projects` for datapoints defined on `datapoint_projects`."""
    dp_projects = list(datapoint_projects)
    if not dp_projects:
        return 0
    stmt = (
        select(func.count())
        .select_from(DatapointValue)
        .join(Patient, Patient.id == DatapointValue.patient_id)
        .join(Datapoint, Datapoint.id == DatapointValue.datapoint_id)
        .where(Patient.project_id.in_(list(patient_projects)), Datapoint.project_id.in_(dp_projects))
    )
    return session.scalar(stmt) or 0


def count_values(session: Session, datapoint_id: int) -> int:
    stmt = select(func.count()).select_from(DatapointValue).where(DatapointValue.datapoint_id == datapoint_id)
    return session.scalar(stmt) or 0


def stored_values(session: Session, datapoint_id: int) -> Iterator[tuple[int, Any]]:
    """(id, value) of every stored value of a definition, streamed in batches."""
    stmt = select(DatapointValue.id, DatapointValue.value).where(DatapointValue.datapoint_id == datapoint_id)
    yield from session.execute(stmt.execution_options(yield_per=1000))


def rewrite_forms(session: Session, forms: list[tuple[int, Any, float | None, str | None]]) -> None:
    """Store (id, value, num, text): a value's forms under its definition's new type.

    The value means the same, so neither its version nor its history changes.
    """
    for value_id, value, num, text in forms:
        session.execute(
            update(DatapointValue)
            .where(DatapointValue.id == value_id)
            .values(value=value, num_value=num, text_value=text)
            .execution_options(synchronize_session=False)
        )


def delete_values(session: Session, datapoint_id: int) -> None:
    values = select(DatapointValue.id).where(DatapointValue.datapoint_id == datapoint_id)
    session.execute(delete(DatapointValueVersion).where(DatapointValueVersion.value_id.in_(values)))
    session.execute(delete(DatapointValue).where(DatapointValue.datapoint_id == datapoint_id))


def count_patient_values_of(session: Session, patient_pk: int, datapoint_projects: Iterable[int]) -> int:
    """Values of one patient for datapoints defined on `datapoint_projects`."""
    dp_projects = list(datapoint_projects)
    if not dp_projects:
        return 0
    stmt = (
        select(func.count())
        .select_from(DatapointValue)
        .join(Datapoint, Datapoint.id == DatapointValue.datapoint_id)
        .where(DatapointValue.patient_id == patient_pk, Datapoint.project_id.in_(dp_projects))
    )
    return session.scalar(stmt) or 0
