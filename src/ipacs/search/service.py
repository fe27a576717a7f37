"""Search rules: compile the query against the datapoints of the project's lineage,
scope it to the subtree the caller may read, and page or export the matches."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session, joinedload

from ipacs.auth.caller import Caller
from ipacs.authz.access import require_role
from ipacs.authz.roles import Role
from ipacs.datapoints import values as typing_
from ipacs.datapoints.value_service import shown
from ipacs.db.engine import Database
from ipacs.db.like import LIKE_ESCAPE, contains_pattern
from ipacs.db.paging import Page, PageParams, fetch_page
from ipacs.errors import InvalidRequest, NotFound
from ipacs.models import Datapoint, DatapointValue, Patient, ProjectClosure, Study
from ipacs.query import QuerySchema, compile_query
from ipacs.search import repository
from ipacs.search.repository import Target
from ipacs.search.schemas import Operator, PatientResult, SearchResponse, StringQuery, StudyResult

PATIENT_COLUMNS = (
    "id",
    "uuid",
    "project_id",
    "patient_id",
    "patient_name",
    "birth_date",
    "sex",
    "created_at",
    "updated_at",
)
STUDY_COLUMNS = (
    "id",
    "uuid",
    "study_instance_uid",
    "patient_pk",
    "patient_id",
    "project_id",
    "accession_number",
    "study_date",
    "study_time",
    "description",
    "modalities",
    "visit",
    "status",
    "series_count",
    "instance_count",
    "size_bytes",
    "created_at",
)


@dataclass(frozen=True)
class SearchPlan:
    """A checked, scoped query: what both the JSON page and the CSV export run."""

    statement: Select[Any]
    target: Target
    datapoints: list[Datapoint]


def plan(session: Session, caller: Caller, project_id: int, query: str, target: Target) -> SearchPlan:
    require_role(session, caller, project_id, Role.VIEWER)
    datapoints = repository.lineage_datapoints(session, project_id)
    where = compile_query(query, QuerySchema(datapoints), target) if query.strip() else None
    return SearchPlan(repository.matching(caller, project_id, target, where), target, datapoints)


def _values_by_name(datapoints: list[Datapoint], values: dict[int, Any]) -> dict[str, Any]:
    return {d.name: shown(d.type, values[d.id]) for d in datapoints if d.id in values}


def search(session: Session, caller: Caller, project_id: int, body: StringQuery) -> SearchResponse:
    found = plan(session, caller, project_id, body.query, body.target)
    creator = Patient.creator if body.target == "patients" else Study.creator
    stmt = found.statement.options(joinedload(creator))
    items, total, next_after = repository.page(session, stmt, body.target, body.limit, body.after)
    values: dict[int, dict[int, Any]] = {}
    if body.include_values:
        patient_ids = [i.id if body.target == "patients" else i.patient_id for i in items]
        values = repository.values_by_patient(session, patient_ids)
    results: list[Any] = []
    for item in items:
        extra = None
        if body.include_values:
            extra = _values_by_name(
                found.datapoints, values.get(item.id if body.target == "patients" else item.patient_id, {})
            )
        if body.target == "patients":
            results.append(PatientResult.model_validate(item).model_copy(update={"values": extra}))
        else:
            results.append(StudyResult.model_validate(item).model_copy(update={"values": extra}))
    return SearchResponse(results=results, total=total, next_after=next_after)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return str(value.isoformat()).replace("+00:00", "Z")
    return str(value)


def csv_header(found: SearchPlan) -> list[str]:
    builtin = PATIENT_COLUMNS if found.target == "patients" else STUDY_COLUMNS
    return [*builtin, *dict.fromkeys(d.name for d in found.datapoints)]


def stream_csv(database: Database, found: SearchPlan) -> Iterator[bytes]:
    """Every match as CSV, a batch at a time, in a read transaction of its own."""
    names = list(dict.fromkeys(d.name for d in found.datapoints))
    type_of = {d.name: d.type for d in found.datapoints}
    name_of = {d.id: d.name for d in found.datapoints}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_header(found))
    yield buffer.getvalue().encode()
    with database.session() as session:
        for batch in repository.batches(session, found.statement, found.target):
            buffer.seek(0)
            buffer.truncate()
            patient_ids = [r.id if found.target == "patients" else r.patient_id for r in batch]
            values = repository.values_by_patient(session, patient_ids)
            patients = {} if found.target == "patients" else repository.patients_by_id(session, patient_ids)
            for row in batch:
                pid = row.id if found.target == "patients" else row.patient_id
                by_name = {name_of[d]: v for d, v in values.get(pid, {}).items() if d in name_of}
                writer.writerow(
                    [
                        *_builtin_cells(row, found.target, patients),
                        *(typing_.text_form(type_of[n], by_name.get(n)) for n in names),
                    ]
                )
            yield buffer.getvalue().encode()


def _builtin_cells(row: Any, target: Target, patients: dict[int, Patient]) -> list[str]:
    if target == "patients":
        return [_cell(getattr(row, c)) for c in PATIENT_COLUMNS]
    cells = []
    for column in STUDY_COLUMNS:
        if column == "patient_pk":
            cells.append(str(row.patient_id))
        elif column == "patient_id":
            cells.append(patients[row.patient_id].patient_id)
        elif column == "modalities":
            cells.append(row.modalities)
        else:
            cells.append(_cell(getattr(row, column)))
    return cells


def search_values(
    session: Session,
    caller: Caller,
    project_id: int,
    name: str,
    op: Operator,
    raw: str,
    params: PageParams,
) -> tuple[Page[DatapointValue], dict[int, Patient], dict[int, Datapoint]]:
    """Values of a datapoint matching `op value`, in the project subtree, with their patients."""
    require_role(session, caller, project_id, Role.VIEWER)
    datapoints = [d for d in repository.lineage_datapoints(session, project_id) if d.name_key == name.lower()]
    if not datapoints:
        raise NotFound(f"No datapoint named {name!r} in this project")
    dp_type = datapoints[0].type
    condition = _value_condition(dp_type, op, raw)
    subtree = select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == project_id)
    stmt = (
        select(DatapointValue)
        .options(joinedload(DatapointValue.creator), joinedload(DatapointValue.updated_by))
        .join(Patient, Patient.id == DatapointValue.patient_id)
        .where(
            DatapointValue.datapoint_id.in_([d.id for d in datapoints]),
            Patient.project_id.in_(subtree),
            condition,
        )
    )
    result = fetch_page(session, stmt, DatapointValue.id, params)
    patients = repository.patients_by_id(session, [v.patient_id for v in result.items])
    return result, patients, {d.id: d for d in datapoints}


def _value_condition(dp_type: str, op: Operator, raw: str) -> ColumnElement[bool]:
    column: Any = (
        DatapointValue.num_value if typing_.sortable_column(dp_type) == "num" else DatapointValue.text_value
    )
    if op == "contains":
        if dp_type not in ("string", "choice"):
            raise InvalidRequest(
                "contains works on string and choice datapoints",
                details=[{"field": "op", "message": f"not for a {dp_type} datapoint"}],
            )
        return and_(column.is_not(None), func.lower(column).like(contains_pattern(raw), escape=LIKE_ESCAPE))
    if op in ("lt", "le", "gt", "ge") and dp_type not in typing_.ORDERED_TYPES:
        raise InvalidRequest(
            f"{op} needs an ordered datapoint (integer, decimal, date, datetime)",
            details=[{"field": "op", "message": f"not for a {dp_type} datapoint"}],
        )
    num, text = typing_.sortable_form(dp_type, _parse_param(dp_type, raw))
    key = num if num is not None else text
    conditions: dict[str, ColumnElement[bool]] = {
        "eq": column == key,
        "ne": column != key,
        "lt": column < key,
        "le": column <= key,
        "gt": column > key,
        "ge": column >= key,
    }
    return conditions[op]


def _parse_param(dp_type: str, raw: str) -> Any:
    """A query-string value read as the datapoint's type, then checked like any value."""
    value: Any = raw
    try:
        if dp_type == "integer":
            value = int(raw)
        elif dp_type == "decimal":
            value = float(raw)
        elif dp_type == "boolean":
            if raw.lower() not in ("true", "false"):
                raise ValueError(raw)
            value = raw.lower() == "true"
        return typing_.canonical(dp_type, value)
    except (ValueError, typing_.InvalidValue) as exc:
        message = exc.message if isinstance(exc, typing_.InvalidValue) else f"not a {dp_type}: {raw!r}"
        raise InvalidRequest(message, details=[{"field": "value", "message": message}]) from exc
