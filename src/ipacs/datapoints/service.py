"""Datapoint definitions: managers define typed fields that apply down the project tree."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session

from ipacs.audit import service as audit
from ipacs.auth.caller import Caller
from ipacs.authz.access import require_role
from ipacs.authz.roles import Role
from ipacs.datapoints import repository
from ipacs.datapoints import values as typing_
from ipacs.datapoints.schemas import DatapointCreate, DatapointUpdate
from ipacs.db.paging import Page, PageParams
from ipacs.errors import Conflict, InvalidRequest, NotFound
from ipacs.etags import check_if_match
from ipacs.models import Datapoint
from ipacs.projects.repository import ancestor_ids
from ipacs.query.lexer import KEYWORDS

AUDITED_FIELDS = (
    "name",
    "label",
    "description",
    "type",
    "choices",
    "unit",
    "minimum",
    "maximum",
    "pattern",
    "required",
)
DEFINITION_FIELDS = ("type", "choices", "minimum", "maximum", "pattern")


def _invalid(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", details=[{"field": field, "message": message}])


def validate_definition(fields: dict[str, Any]) -> dict[str, Any]:
    """Check the type rules of a whole definition; returns min/max in canonical form."""
    dp_type = fields["type"]
    choices = fields.get("choices")
    if dp_type == "choice":
        if not choices:
            raise _invalid("choices", "a choice datapoint needs a non-empty list of choices")
        if any(not c for c in choices) or len(set(choices)) != len(choices):
            raise _invalid("choices", "choices must be non-empty and distinct")
    elif choices is not None:
        raise _invalid("choices", "only a choice datapoint has choices")
    bounds: dict[str, Any] = {}
    for bound in ("minimum", "maximum"):
        raw = fields.get(bound)
        if raw is None:
            bounds[bound] = None
            continue
        if dp_type not in typing_.ORDERED_TYPES:
            raise _invalid(bound, f"only {', '.join(typing_.ORDERED_TYPES)} datapoints have a {bound}")
        try:
            bounds[bound] = typing_.canonical(dp_type, raw)
        except typing_.InvalidValue as exc:
            raise _invalid(bound, exc.message) from exc
    if bounds["minimum"] is not None and bounds["maximum"] is not None:
        try:
            typing_.check_constraints(dp_type, bounds["minimum"], maximum=bounds["maximum"])
        except typing_.InvalidValue as exc:
            raise _invalid("minimum", "must not be greater than maximum") from exc
    pattern = fields.get("pattern")
    if pattern is not None:
        if dp_type != "string":
            raise _invalid("pattern", "only a string datapoint has a pattern")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _invalid("pattern", f"not a valid regular expression: {exc}") from exc
    return bounds


def _check_name(session: Session, project_id: int, name: str, exclude_id: int | None) -> None:
    if name.upper() in KEYWORDS:
        # A query could not name it: `in >= 3` does not parse.
        raise _invalid("name", f"{name!r} is a keyword of the query language")
    if repository.name_taken_in_lineage(session, project_id, name.lower(), exclude_id):
        raise Conflict(
            f"A datapoint named {name!r} already exists in this project, an ancestor or a subproject"
        )


def list_definitions(
    session: Session, caller: Caller, project_id: int, params: PageParams, search: str | None
) -> Page[Datapoint]:
    require_role(session, caller, project_id, Role.VIEWER)
    return repository.list_applicable(session, project_id, params, search)


def get_definition(
    session: Session, caller: Caller, project_id: int, datapoint_id: int, needed: Role = Role.VIEWER
) -> Datapoint:
    """A definition that applies in the project (its own or an ancestor's)."""
    require_role(session, caller, project_id, needed)
    datapoint = repository.get(session, datapoint_id)
    if datapoint is None or datapoint.project_id not in ancestor_ids(session, project_id):
        raise NotFound(f"No datapoint {datapoint_id} in project {project_id}")
    return datapoint


def _own_definition(session: Session, caller: Caller, project_id: int, datapoint_id: int) -> Datapoint:
    """A definition of this very project, for managers to change."""
    require_role(session, caller, project_id, Role.VIEWER)
    datapoint = repository.get(session, datapoint_id)
    if datapoint is None or datapoint.project_id != project_id:
        raise NotFound(f"No datapoint {datapoint_id} defined on project {project_id}")
    require_role(session, caller, project_id, Role.MANAGER)
    return datapoint


def create_definition(session: Session, caller: Caller, project_id: int, data: DatapointCreate) -> Datapoint:
    require_role(session, caller, project_id, Role.MANAGER)
    fields = data.model_dump()
    fields.update(validate_definition(fields))
    _check_name(session, project_id, data.name, None)
    datapoint = Datapoint(project_id=project_id, name_key=data.name.lower(), creator_id=caller.id, **fields)
    session.add(datapoint)
    session.flush()
    audit.record(
        session,
        caller,
        "create",
        "datapoint",
        entity_id=datapoint.id,
        entity_uuid=datapoint.uuid,
        project_id=project_id,
        after=audit.snapshot(datapoint, AUDITED_FIELDS),
    )
    return datapoint


def _check_stored_values(
    session: Session, datapoint: Datapoint, merged: dict[str, Any]
) -> list[tuple[int, Any, float | None, str | None]]:
    """409 naming how many stored values the changed definition would reject.

    Otherwise, on a type change, every value's forms under the new type: the
    sortable form queries compare can differ (a datetime's fixed-width text is
    not the same string as its canonical form), and so can the canonical one
    (5.0 as a decimal is 5 as an integer).
    """
    broken = 0
    forms: list[tuple[int, Any, float | None, str | None]] = []
    retyped = merged["type"] != datapoint.type
    for value_id, value in repository.stored_values(session, datapoint.id):
        try:
            typed = typing_.typed_value(
                merged["type"],
                value,
                choices=merged["choices"],
                minimum=merged["minimum"],
                maximum=merged["maximum"],
                pattern=merged["pattern"],
            )
        except typing_.InvalidValue:
            broken += 1
            continue
        if retyped:
            forms.append((value_id, typed.value, typed.num, typed.text))
    if broken:
        raise Conflict(f"{broken} existing values would not fit the changed definition")
    return forms


def update_definition(
    session: Session,
    caller: Caller,
    project_id: int,
    datapoint_id: int,
    data: DatapointUpdate,
    if_match: str | None,
) -> Datapoint:
    datapoint = _own_definition(session, caller, project_id, datapoint_id)
    check_if_match(datapoint, if_match)
    changes = data.model_dump(exclude_unset=True)
    for not_null in ("name", "type", "required"):
        if not_null in changes and changes[not_null] is None:
            raise _invalid(not_null, "cannot be null")
    merged = {f: changes.get(f, getattr(datapoint, f)) for f in DEFINITION_FIELDS}
    if "type" in changes and changes["type"] != datapoint.type:
        # A new type drops the old type's extras unless they are given again.
        for extra in ("choices", "minimum", "maximum", "pattern"):
            merged[extra] = changes.get(extra)
    merged.update(validate_definition(merged))
    if "name" in changes:
        _check_name(session, project_id, changes["name"], datapoint.id)
    forms = []
    if any(merged[f] != getattr(datapoint, f) for f in DEFINITION_FIELDS):
        forms = _check_stored_values(session, datapoint, merged)
    before = audit.snapshot(datapoint, AUDITED_FIELDS)
    for name in ("name", "label", "description", "unit", "required"):
        if name in changes:
            setattr(datapoint, name, changes[name])
    for name in DEFINITION_FIELDS:
        setattr(datapoint, name, merged[name])
    datapoint.name_key = datapoint.name.lower()
    session.flush()
    repository.rewrite_forms(session, forms)
    old, new = audit.changed_fields(before, audit.snapshot(datapoint, AUDITED_FIELDS))
    if new:
        audit.record(
            session,
            caller,
            "update",
            "datapoint",
            entity_id=datapoint.id,
            entity_uuid=datapoint.uuid,
            project_id=project_id,
            before=old,
            after=new,
        )
    return datapoint


def delete_definition(
    session: Session, caller: Caller, project_id: int, datapoint_id: int, *, force: bool, if_match: str | None
) -> int:
    """Refused while values exist unless forced; returns how many values went with it."""
    datapoint = _own_definition(session, caller, project_id, datapoint_id)
    check_if_match(datapoint, if_match)
    count = repository.count_values(session, datapoint.id)
    if count and not force:
        raise Conflict(
            f"{count} values exist for datapoint {datapoint.name!r}; pass force=true to delete them too"
        )
    before = audit.snapshot(datapoint, AUDITED_FIELDS)
    repository.delete_values(session, datapoint.id)
    session.delete(datapoint)
    session.flush()
    audit.record(
        session,
        caller,
        "delete",
        "datapoint",
        entity_id=datapoint_id,
        entity_uuid=datapoint.uuid,
        project_id=project_id,
        before=before,
        after={"deleted_values": count},
    )
    return count
