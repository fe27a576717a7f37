"""/projects/{id}/patients/{id}/datapoints: a patient's values."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ipacs.api.deps import CurrentUser, SessionDep
from ipacs.api.headers import IfMatch
from ipacs.datapoints import value_service as service
from ipacs.datapoints.schemas import (
    DatapointValueOut,
    PostDatapointResponse,
    ValueCreate,
    ValueUpdate,
    ValueVersionOut,
)
from ipacs.etags import etag_of
from ipacs.schemas import error_responses

router = APIRouter(
    prefix="/projects/{project_id}/patients/{patient_pk}/datapoints",
    tags=["datapoint values"],
    responses=error_responses(400, 401, 403, 404),
)


@router.get("", response_model=list[DatapointValueOut])
def list_values(
    project_id: int, patient_pk: int, caller: CurrentUser, db: SessionDep
) -> list[DatapointValueOut]:
    """Every datapoint that applies to the patient, with its value or null."""
    return service.list_values(db, caller, project_id, patient_pk)


@router.post("", response_model=PostDatapointResponse, status_code=201, responses=error_responses(409))
def create_value(
    project_id: int,
    patient_pk: int,
    body: ValueCreate,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
) -> PostDatapointResponse:
    """Set a value by datapoint_id or datapoint_name; 409 when one exists (use PUT)."""
    value = service.create_value(db, caller, project_id, patient_pk, body)
    response.headers["ETag"] = etag_of(value)
    return PostDatapointResponse(id=value.id, uuid=value.uuid)


@router.get("/{datapoint_id}", response_model=DatapointValueOut)
def read_value(
    project_id: int,
    patient_pk: int,
    datapoint_id: int,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
) -> DatapointValueOut:
    """One value (null when not set)."""
    datapoint, value = service.get_value(db, caller, project_id, patient_pk, datapoint_id)
    if value is not None:
        response.headers["ETag"] = etag_of(value)
    return service.present(datapoint, patient_pk, value)


@router.put("/{datapoint_id}", response_model=DatapointValueOut, responses=error_responses(412))
def edit_value(
    project_id: int,
    patient_pk: int,
    datapoint_id: int,
    body: ValueUpdate,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    if_match: IfMatch = None,
) -> DatapointValueOut:
    """Change a value (or set it if unset); the earlier version is kept in the history."""
    datapoint, value = service.edit_value(
        db, caller, project_id, patient_pk, datapoint_id, body.value, if_match
    )
    response.headers["ETag"] = etag_of(value)
    return service.present(datapoint, patient_pk, value)


@router.get("/{datapoint_id}/history", response_model=list[ValueVersionOut])
def value_history(
    project_id: int, patient_pk: int, datapoint_id: int, caller: CurrentUser, db: SessionDep
) -> list[ValueVersionOut]:
    """Every earlier version of the value, newest first, with who wrote it and when."""
    return service.value_history(db, caller, project_id, patient_pk, datapoint_id)
