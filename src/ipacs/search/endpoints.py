"""POST /projects/{id}/search (JSON or CSV) and GET /projects/{id}/datapoints/search."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from ipacs.api.deps import CurrentUser, SessionDep
from ipacs.api.paging import PageDep, set_page_headers
from ipacs.datapoints.value_service import present
from ipacs.schemas import error_responses
from ipacs.search import export, service
from ipacs.search.schemas import DatapointValueMatch, Operator, PatientRef, SearchResponse, StringQuery

router = APIRouter(
    prefix="/projects/{project_id}", tags=["search"], responses=error_responses(400, 401, 403, 404)
)


@router.post(
    "/search",
    response_model=SearchResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def search(
    project_id: int, body: StringQuery, request: Request, caller: CurrentUser, db: SessionDep
) -> SearchResponse | StreamingResponse:
    """Advanced search (StringQuery) over the project and its subprojects; `Accept: text/csv` exports."""
    if "text/csv" in request.headers.get("accept", ""):
        found = service.plan(db, caller, project_id, body.query, body.target)
        return StreamingResponse(
            export.stream_csv(request.app.state.database, found),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="project-{project_id}-{body.target}.csv"'},
        )
    return service.search(db, caller, project_id, body)


@router.get("/datapoints/search", response_model=list[DatapointValueMatch])
def search_values(
    project_id: int,
    request: Request,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    page: PageDep,
    name: Annotated[str, Query(max_length=64, description="datapoint name")],
    op: Annotated[Operator, Query(description="eq ne lt le gt ge contains")] = "eq",
    value: Annotated[str, Query(max_length=1000)] = "",
) -> list[DatapointValueMatch]:
    """Datapoint values matching `name op value` in the project subtree, with their patients."""
    result, patients, datapoints = service.search_values(db, caller, project_id, name, op, value, page)
    set_page_headers(request, response, result)
    # Built from models already validated (a value, its patient): not validated a second time.
    return [
        DatapointValueMatch.model_construct(
            **dict(present(datapoints[v.datapoint_id], v.patient_id, v)),
            patient=PatientRef.model_validate(patients[v.patient_id]),
        )
        for v in result.items
    ]
