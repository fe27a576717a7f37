"""Search queries: one SQL statement per page, scoped to a project subtree and to what
the caller may read."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

from sqlalchemy import ColumnElement, Row, Select, func, select
from sqlalchemy.orm import Session

from ipacs.auth.caller import Caller
from ipacs.authz.access import readable_project_ids
from ipacs.models import Datapoint, DatapointValue, Patient, ProjectClosure, Study

Target = Literal["patients", "studies"]


def lineage_datapoints(session: Session, project_id: int) -> list[Datapoint]:
    """Definitions a search over the subtree can name: the ancestors' and the subtree's."""
    up = select(ProjectClosure.ancestor_id).where(ProjectClosure.descendant_id == project_id)
    down = select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == project_id)
    stmt = select(Datapoint).where(Datapoint.project_id.in_(up.union(down))).order_by(Datapoint.id)
    return list(session.scalars(stmt))


def _scope(caller: Caller, project_id: int, column: Any) -> list[ColumnElement[bool]]:
    subtree = select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == project_id)
    conditions = [column.in_(subtree)]
    if not caller.is_admin:
        # Implied by reading the project, and kept so no path forgets it.
        conditions.append(column.in_(readable_project_ids(caller)))
    return conditions


def matching(
    caller: Caller, project_id: int, target: Target, where: ColumnElement[bool] | None
) -> Select[Any]:
    if target == "patients":
        stmt: Select[Any] = select(Patient).where(*_scope(caller, project_id, Patient.project_id))
        id_column: Any = Patient.id
    else:
        stmt = select(Study).join(Patient, Patient.id == Study.patient_id)
        stmt = stmt.where(*_scope(caller, project_id, Study.project_id))
        id_column = Study.id
    if where is not None:
        stmt = stmt.where(where)
    return stmt.order_by(id_column)


def page(
    session: Session, stmt: Select[Any], target: Target, limit: int, after: int | None
) -> tuple[list[Any], int, int | None]:
    id_column: Any = Patient.id if target == "patients" else Study.id
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    if after is not None:
        stmt = stmt.where(id_column > after)
    rows = list(session.scalars(stmt.limit(limit + 1)))
    items = rows[:limit]
    next_after = items[-1].id if len(rows) > limit else None
    return items, total, next_after


def stream_rows(session: Session, stmt: Select[Any], size: int) -> Iterator[Sequence[Row[Any]]]:
    """Every row of `stmt`, `size` at a time, from one execution (a server-side cursor on
    PostgreSQL): the query runs once, however many rows, and memory holds one batch."""
    result = session.execute(stmt, execution_options={"yield_per": size})
    yield from result.partitions()


def values_by_patient(
    session: Session, patient_ids: Iterable[int], datapoint_ids: Iterable[int]
) -> dict[int, dict[int, Any]]:
    """{patient id: {datapoint id: value}} for a batch of patients, in one query."""
    ids = list(set(patient_ids))
    found: dict[int, dict[int, Any]] = defaultdict(dict)
    if not ids:
        return found
    rows = session.execute(
        select(DatapointValue.patient_id, DatapointValue.datapoint_id, DatapointValue.value).where(
            DatapointValue.patient_id.in_(ids), DatapointValue.datapoint_id.in_(list(datapoint_ids))
        )
    )
    for patient_id, datapoint_id, value in rows:
        found[patient_id][datapoint_id] = value
    return found


def patients_by_id(session: Session, ids: Iterable[int]) -> dict[int, Patient]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    return {p.id: p for p in session.scalars(select(Patient).where(Patient.id.in_(wanted)))}
