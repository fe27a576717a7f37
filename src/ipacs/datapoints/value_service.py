"""Datapoint values: typed, validated against their definition, every version kept.

`write_value` is the one way a value is stored (API and bulk import alike):
it validates, keeps the replaced version in the history, and audits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy.orm import Session

from ipacs.audit import service as audit
from ipacs.auth.caller import Caller
from ipacs.authz.roles import Role
from ipacs.datapoints import repository as definitions
from ipacs.datapoints import value_repository as repository
from ipacs.datapoints import values as typing_
from ipacs.datapoints.schemas import DatapointValueOut, ValueCreate, ValueVersionOut
from ipacs.errors import Conflict, InvalidRequest, NotFound, PreconditionFailed
from ipacs.etags import check_if_match
from ipacs.models import Datapoint, DatapointValue, DatapointValueVersion, Patient
from ipacs.patients.service import find_patient
from ipacs.schemas import Creator


def shown(dp_type: str, stored: Any) -> Any:
    """A stored value as the API shows it: a decimal is always a double.

    The JSON column keeps what was written (3 or 3.0), and PostgreSQL's JSONB
    gives back a large double such as 1e300 as an integer; a client should
    see one type per datapoint type whatever the database.
    """
    if dp_type == "decimal" and isinstance(stored, int) and not isinstance(stored, bool):
        return float(stored)
    return stored


def is_unchanged(dp_type: str, existing: DatapointValue | None, canonical: Any) -> bool:
    """Would writing `canonical` leave the value as it is? (3 and 3.0 are one decimal.)"""
    return existing is not None and shown(dp_type, existing.value) == shown(dp_type, canonical)


class StoredValue(Protocol):
    """What `present` reads of a value: a `DatapointValue`, or a row of the same columns
    (the datapoint search reads plain rows)."""

    @property
    def id(self) -> int: ...
    @property
    def uuid(self) -> UUID: ...
    @property
    def value(self) -> Any: ...
    @property
    def version(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def creator(self) -> object | None: ...
    @property
    def updated_by(self) -> object | None: ...


def present(datapoint: Datapoint, patient_pk: int, value: StoredValue | None) -> DatapointValueOut:
    """A value as the API shows it; a missing value is shown with `value: null`."""
    if value is None:
        return DatapointValueOut(
            id=None,
            uuid=None,
            datapoint_id=datapoint.id,
            datapoint_name=datapoint.name,
            patient_id=patient_pk,
            value=None,
            version=None,
            created_at=None,
            updated_at=None,
            creator=None,
            updated_by=None,
        )
    return DatapointValueOut(
        id=value.id,
        uuid=value.uuid,
        datapoint_id=datapoint.id,
        datapoint_name=datapoint.name,
        patient_id=patient_pk,
        value=shown(datapoint.type, value.value),
        version=value.version,
        created_at=value.created_at,
        updated_at=value.updated_at,
        creator=Creator.model_validate(value.creator) if value.creator else None,
        updated_by=Creator.model_validate(value.updated_by) if value.updated_by else None,
    )


def values_table(session: Session, patient: Patient, datapoints: list[Datapoint]) -> list[DatapointValueOut]:
    """One entry per datapoint that applies, in definition order: the value or null."""
    by_datapoint = {v.datapoint_id: v for v in repository.values_of_patients(session, [patient.id])}
    return [present(d, patient.id, by_datapoint.get(d.id)) for d in datapoints]


def list_values(
    session: Session, caller: Caller, project_id: int, patient_pk: int
) -> list[DatapointValueOut]:
    patient = find_patient(session, caller, project_id, patient_pk)
    return values_table(session, patient, definitions.all_applicable(session, patient.project_id))


def _applicable(session: Session, patient: Patient, datapoint_id: int | None, name: str | None) -> Datapoint:
    """A definition that applies to the patient's project, by id or (case-insensitive) name."""
    for datapoint in definitions.all_applicable(session, patient.project_id):
        if datapoint.id == datapoint_id or (name is not None and datapoint.name_key == name.lower()):
            return datapoint
    raise NotFound(
        f"No datapoint {datapoint_id if datapoint_id is not None else name!r} applies to this patient"
    )


def _typed(datapoint: Datapoint, raw: Any) -> typing_.TypedValue:
    if raw is None:
        raise InvalidRequest("value is required", details=[{"field": "value", "message": "required"}])
    try:
        return typing_.typed_value(
            datapoint.type,
            raw,
            choices=datapoint.choices,
            minimum=datapoint.minimum,
            maximum=datapoint.maximum,
            pattern=datapoint.pattern,
        )
    except typing_.InvalidValue as exc:
        message = f"{datapoint.name}: {exc.message} ({exc.rule})"
        raise InvalidRequest(message, details=[{"field": "value", "message": message}]) from exc


def write_value(
    session: Session,
    actor: Caller | None,
    patient: Patient,
    datapoint: Datapoint,
    raw: Any,
    existing: DatapointValue | None,
) -> DatapointValue:
    """Create or replace a value; the replaced version goes to the history."""
    typed = _typed(datapoint, raw)
    actor_id = actor.id if actor else None
    if existing is None:
        value = DatapointValue(
            datapoint_id=datapoint.id,
            patient_id=patient.id,
            value=typed.value,
            num_value=typed.num,
            text_value=typed.text,
            creator_id=actor_id,
            updated_by_id=actor_id,
        )
        session.add(value)
        session.flush()
        audit.record(
            session,
            actor,
            "create",
            "datapoint_value",
            entity_id=value.id,
            entity_uuid=value.uuid,
            project_id=patient.project_id,
            after={"patient_id": patient.patient_id, "datapoint": datapoint.name, "value": typed.value},
        )
        return value
    if is_unchanged(datapoint.type, existing, typed.value):
        return existing  # nothing changed: no new version
    session.add(
        DatapointValueVersion(
            value_id=existing.id,
            version=existing.version,
            value=existing.value,
            changed_at=existing.updated_at,
            changed_by_id=existing.updated_by_id,
            replaced_by_id=actor_id,
        )
    )
    before = existing.value
    existing.value, existing.num_value, existing.text_value = typed.value, typed.num, typed.text
    existing.updated_by_id = actor_id
    session.flush()
    audit.record(
        session,
        actor,
        "update",
        "datapoint_value",
        entity_id=existing.id,
        entity_uuid=existing.uuid,
        project_id=patient.project_id,
        before={"value": before},
        after={"patient_id": patient.patient_id, "datapoint": datapoint.name, "value": typed.value},
    )
    return existing


def create_value(
    session: Session, caller: Caller, project_id: int, patient_pk: int, data: ValueCreate
) -> DatapointValue:
    """POST: a new value; 409 when one exists (edit it with PUT)."""
    if (data.datapoint_id is None) == (data.datapoint_name is None):
        raise InvalidRequest(
            "Give exactly one of datapoint_id and datapoint_name",
            details=[{"field": "datapoint_id", "message": "exactly one of datapoint_id, datapoint_name"}],
        )
    patient = find_patient(session, caller, project_id, patient_pk, Role.USER)
    datapoint = _applicable(session, patient, data.datapoint_id, data.datapoint_name)
    if repository.get(session, patient.id, datapoint.id) is not None:
        raise Conflict(f"A value for {datapoint.name!r} exists; change it with PUT")
    return write_value(session, caller, patient, datapoint, data.value, None)


def get_value(
    session: Session, caller: Caller, project_id: int, patient_pk: int, datapoint_id: int
) -> tuple[Datapoint, DatapointValue | None]:
    patient = find_patient(session, caller, project_id, patient_pk)
    datapoint = _applicable(session, patient, datapoint_id, None)
    return datapoint, repository.get(session, patient.id, datapoint.id)


def edit_value(
    session: Session,
    caller: Caller,
    project_id: int,
    patient_pk: int,
    datapoint_id: int,
    raw: Any,
    if_match: str | None,
) -> tuple[Datapoint, DatapointValue]:
    """PUT: change (or first set) a value; If-Match guards against lost updates."""
    patient = find_patient(session, caller, project_id, patient_pk, Role.USER)
    datapoint = _applicable(session, patient, datapoint_id, None)
    existing = repository.get(session, patient.id, datapoint.id)
    if existing is not None:
        check_if_match(existing, if_match)
    elif if_match is not None:
        # RFC 9110: If-Match (even "*") fails when there is no current representation.
        raise PreconditionFailed("The value does not exist, so no ETag can match it")
    write_value(session, caller, patient, datapoint, raw, existing)
    found = repository.get(session, patient.id, datapoint.id)
    assert found is not None
    return datapoint, found


def value_history(
    session: Session, caller: Caller, project_id: int, patient_pk: int, datapoint_id: int
) -> list[ValueVersionOut]:
    datapoint, value = get_value(session, caller, project_id, patient_pk, datapoint_id)
    if value is None:
        raise NotFound("This patient has no value for this datapoint")
    versions = [ValueVersionOut.model_validate(v) for v in repository.history(session, value.id)]
    return [v.model_copy(update={"value": shown(datapoint.type, v.value)}) for v in versions]
