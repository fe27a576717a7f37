"""POST /projects/{id}/datapoints/import: many values in one request, all or nothing."""

from __future__ import annotations

from fastapi import APIRouter

from ipacs.api.deps import CurrentUser, SessionDep
from ipacs.datapoints import import_service as service
from ipacs.datapoints.import_schemas import ImportRequest, ImportSummaryOut
from ipacs.schemas import error_responses

router = APIRouter(
    prefix="/projects/{project_id}/datapoints",
    tags=["datapoint values"],
    responses=error_responses(400, 401, 403, 404, 413),
)


@router.post("/import", response_model=ImportSummaryOut)
def import_values(
    project_id: int, body: ImportRequest, caller: CurrentUser, db: SessionDep
) -> ImportSummaryOut:
    """Set many patients' values (users): every bad cell is reported as rows[i].name, nothing written."""
    return service.import_values(db, caller, project_id, body)
