"""Search rules: compile the query against the datapoints of the project's lineage,
scope it to the subtree the caller may read, and page or export the matches."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_
from sqlalchemy.orm import Session, joinedload

from ipacs.auth.caller import Caller
from ipacs.authz.access import require_role
from ipacs.authz.roles import Role
from ipacs.datapoints import values as typing_
from ipacs.datapoints.value_service import shown
from ipacs.db.paging import Page, PageParams
from ipacs.errors import InvalidRequest, NotFound
from ipacs.models import Datapoint, Patient, Study
from ipacs.query import QuerySchema
from ipacs.query.ast import Operator as QueryOperator
from ipacs.query.compiler import CompiledQuery, contains
from ipacs.query.compiler import compare as compare_values
from ipacs.search import repository
from ipacs.search.repository import Target
from ipacs.search.schemas import Operator, PatientResult, SearchResponse, StringQuery, StudyResult

# A number in a query string: 18, -3, 70.5, 1e3 (not nan, inf or 0x10).
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
# The datapoint search's operators as the query language writes them.
COMPARISONS: dict[str, QueryOperator] = {"eq": "=", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


@dataclass(frozen=True)
class SearchPlan:
    """A checked, scoped query: what both the JSON page and the CSV export run."""

    statements: repository.Statements
    target: Target
    datapoints: list[Datapoint]


def plan(session: Session, caller: Caller, project_id: int, query: str, target: Target) -> SearchPlan:
    require_role(session, caller, project_id, Role.VIEWER)
    datapoints = repository.lineage_datapoints(session, project_id)
    compiled = CompiledQuery(query, QuerySchema(datapoints), target) if query.strip() else None
    statements = repository.plan_statements(session, caller, project_id, target, compiled)
    return SearchPlan(statements, target, datapoints)


def _values_by_name(datapoints: list[Datapoint], values: dict[int, Any]) -> dict[str, Any]:
    return {d.name: shown(d.type, values[d.id]) for d in datapoints if d.id in values}


def search(session: Session, caller: Caller, project_id: int, body: StringQuery) -> SearchResponse:
    found = plan(session, caller, project_id, body.query, body.target)
    creator = Patient.creator if body.target == "patients" else Study.creator
    items, total, next_after = repository.page(
        session, found.statements, body.target, body.limit, body.after, joinedload(creator)
    )
    values: dict[int, dict[int, Any]] = {}
    if body.include_values:
        patient_ids = [i.id if body.target == "patients" else i.patient_id for i in items]
        values = repository.values_by_patient(session, patient_ids, [d.id for d in found.datapoints])
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


def search_values(
    session: Session,
    caller: Caller,
    project_id: int,
    name: str,
    op: Operator,
    raw: str,
    params: PageParams,
) -> tuple[Page[repository.ValueRow], dict[int, repository.PatientKey], dict[int, Datapoint]]:
    """Values of a datapoint matching `op value`, in the project subtree, with their patients."""
    require_role(session, caller, project_id, Role.VIEWER)
    datapoints = [d for d in repository.lineage_datapoints(session, project_id) if d.name_key == name.lower()]
    if not datapoints:
        raise NotFound(f"No datapoint named {name!r} in this project")
    types = sorted({d.type for d in datapoints})
    if len(types) > 1:
        message = f"{name} is defined with different types ({', '.join(types)}) in the projects searched"
        raise InvalidRequest(message, details=[{"field": "name", "message": message}])
    choices = list(dict.fromkeys(c for d in datapoints for c in d.choices or ()))
    condition = _value_condition(types[0], op, raw, choices or None)
    statements = repository.plan_value_search(
        session, caller, project_id, [d.id for d in datapoints], condition
    )
    result, patients = repository.value_page(session, statements, params)
    return result, patients, {d.id: d for d in datapoints}


def _value_condition(dp_type: str, op: Operator, raw: str, choices: list[str] | None) -> repository.ValueTest:
    """`value op raw` as a test on the value's sortable column (checked here, so that a
    wrong operator or value is a 400 before anything runs)."""
    kind = typing_.sortable_column(dp_type)
    if op == "contains":
        if dp_type not in ("string", "choice"):
            raise InvalidRequest(
                "contains works on string and choice datapoints",
                details=[{"field": "op", "message": f"not for a {dp_type} datapoint"}],
            )
        return repository.ValueTest(kind, lambda column: and_(column.is_not(None), contains(column, raw)))
    if op in ("lt", "le", "gt", "ge") and dp_type not in typing_.ORDERED_TYPES:
        raise InvalidRequest(
            f"{op} needs an ordered datapoint (integer, decimal, date, datetime)",
            details=[{"field": "op", "message": f"not for a {dp_type} datapoint"}],
        )
    num, text = typing_.sortable_form(dp_type, _parse_param(dp_type, raw, choices))
    key = num if num is not None else text
    compare = COMPARISONS[op]
    return repository.ValueTest(kind, lambda column: compare_values(column, compare, key))


def _parse_param(dp_type: str, raw: str, choices: list[str] | None) -> Any:
    """A query-string value read as the datapoint's type, then checked like any value."""
    value: Any = raw
    try:
        if dp_type in typing_.NUMERIC_TYPES:
            if not NUMBER.fullmatch(raw):
                raise typing_.InvalidValue(
                    "type", f"expected a number for a {dp_type} datapoint, not {raw!r}"
                )
            value = int(raw) if raw.lstrip("-").isdigit() else float(raw)
        elif dp_type == "boolean":
            if raw.lower() not in ("true", "false"):
                raise typing_.InvalidValue("type", f"expected true or false, not {raw!r}")
            value = raw.lower() == "true"
        return typing_.canonical(dp_type, value, choices)
    except typing_.InvalidValue as exc:
        raise InvalidRequest(exc.message, details=[{"field": "value", "message": exc.message}]) from exc
