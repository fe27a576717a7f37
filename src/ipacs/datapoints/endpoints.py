"""/projects/{id}/datapoints: definitions (the values live under patients)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from ipacs.api.deps import CurrentUser, SessionDep
from ipacs.api.headers import IfMatch
from ipacs.api.paging import PageDep, set_page_headers
from ipacs.datapoints import service
from ipacs.datapoints.schemas import DatapointCreate, DatapointOut, DatapointUpdate, PostDatapointResponse
from ipacs.etags import etag_of
from ipacs.schemas import SuccessResponse, error_responses

router = APIRouter(
    prefix="/projects/{project_id}/datapoints",
    tags=["datapoints"],
    responses=error_responses(400, 401, 403, 404),
)


@router.get("", response_model=list[DatapointOut])
def list_definitions(
    project_id: int,
    request: Request,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    page: PageDep,
    search: Annotated[str | None, Query(max_length=200, description="in name, label, description")] = None,
) -> list[DatapointOut]:
    """The datapoint definitions that apply in this project (its own and its ancestors')."""
    result = service.list_definitions(db, caller, project_id, page, search)
    set_page_headers(request, response, result)
    return [DatapointOut.model_validate(d) for d in result.items]


@router.post("", response_model=PostDatapointResponse, status_code=201, responses=error_responses(409))
def create_definition(
    project_id: int, body: DatapointCreate, response: Response, caller: CurrentUser, db: SessionDep
) -> PostDatapointResponse:
    """Create a datapoint definition (managers)."""
    datapoint = service.create_definition(db, caller, project_id, body)
    response.headers["ETag"] = etag_of(datapoint)
    return PostDatapointResponse(id=datapoint.id, uuid=datapoint.uuid)


@router.get("/{datapoint_id:int}", response_model=DatapointOut)
def read_definition(
    project_id: int, datapoint_id: int, response: Response, caller: CurrentUser, db: SessionDep
) -> DatapointOut:
    """One datapoint definition that applies in this project."""
    datapoint = service.get_definition(db, caller, project_id, datapoint_id)
    response.headers["ETag"] = etag_of(datapoint)
    return DatapointOut.model_validate(datapoint)


@router.put("/{datapoint_id:int}", response_model=DatapointOut, responses=error_responses(409, 412))
def update_definition(
    project_id: int,
    datapoint_id: int,
    body: DatapointUpdate,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    if_match: IfMatch = None,
) -> DatapointOut:
    """Update a definition (managers); 409 naming how many stored values it would break."""
    datapoint = service.update_definition(db, caller, project_id, datapoint_id, body, if_match)
    response.headers["ETag"] = etag_of(datapoint)
    return DatapointOut.model_validate(datapoint)


@router.delete("/{datapoint_id:int}", response_model=SuccessResponse, responses=error_responses(409, 412))
def delete_definition(
    project_id: int,
    datapoint_id: int,
    caller: CurrentUser,
    db: SessionDep,
    force: Annotated[bool, Query(description="also delete the values")] = False,
    if_match: IfMatch = None,
) -> SuccessResponse:
    """Delete a definition (managers); 409 while values exist unless force=true."""
    count = service.delete_definition(db, caller, project_id, datapoint_id, force=force, if_match=if_match)
    return SuccessResponse(message=f"Deleted the datapoint and {count} values")
