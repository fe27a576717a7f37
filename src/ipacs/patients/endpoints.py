"""/projects/{id}/patients and the Patients API /patients/{uuid}."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, BackgroundTasks, Query, Request, Response

from ipacs.api.deps import CurrentUser, SessionDep
from ipacs.api.headers import IfMatch
from ipacs.api.paging import PageDep, set_page_headers
from ipacs.authz.roles import Role
from ipacs.dicom.removal import remove_unreferenced
from ipacs.etags import etag_of
from ipacs.patients import detail, service
from ipacs.patients.repository import PatientSort
from ipacs.patients.schemas import PatientDetail, PatientEmpty, PatientOut, PatientUpdate
from ipacs.schemas import SuccessResponse, error_responses

router = APIRouter(
    prefix="/projects/{project_id}/patients", tags=["patients"], responses=error_responses(400, 401, 403, 404)
)
patients_api = APIRouter(prefix="/patients", tags=["patients"], responses=error_responses(400, 401, 403, 404))


@router.get("", response_model=list[PatientOut])
def list_patients(
    project_id: int,
    request: Request,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    page: PageDep,
    patient_id: Annotated[str | None, Query(max_length=64, description="exact PatientID")] = None,
    search: Annotated[str | None, Query(max_length=200, description="in patient_id and patient_name")] = None,
    recursive: Annotated[bool, Query(description="include the subprojects' patients")] = False,
    sort: Annotated[PatientSort, Query(description="order; `after` paging needs id order")] = "id",
) -> list[PatientOut]:
    """Patients of the project (and its subprojects with recursive=true)."""
    result = service.list_patients(
        db, caller, project_id, page, recursive=recursive, patient_id=patient_id, search=search, sort=sort
    )
    set_page_headers(request, response, result)
    return [PatientOut.model_validate(p) for p in result.items]


@router.post("", response_model=PatientOut, status_code=201, responses=error_responses(409))
def create_patient(
    project_id: int, body: PatientEmpty, response: Response, caller: CurrentUser, db: SessionDep
) -> PatientOut:
    """Create a patient (PatientEmpty); `patient_id` is unique within the project."""
    patient = service.create_patient(db, caller, project_id, body)
    response.headers["ETag"] = etag_of(patient)
    return PatientOut.model_validate(patient)


@router.get("/uuid/{patient_uuid}", response_model=PatientOut)
def read_patient_by_uuid(
    project_id: int, patient_uuid: UUID, response: Response, caller: CurrentUser, db: SessionDep
) -> PatientOut:
    """A patient of this project (or a subproject) by UUID."""
    patient = service.find_patient_by_uuid(db, caller, patient_uuid, project_id=project_id)
    response.headers["ETag"] = etag_of(patient)
    return PatientOut.model_validate(patient)


@router.put("/uuid/{patient_uuid}", response_model=PatientOut, responses=error_responses(409, 412))
def update_patient_by_uuid(
    project_id: int,
    patient_uuid: UUID,
    body: PatientUpdate,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    if_match: IfMatch = None,
) -> PatientOut:
    """Update a patient by UUID (partial)."""
    patient = service.find_patient_by_uuid(db, caller, patient_uuid, Role.USER, project_id=project_id)
    patient = service.update_patient(db, caller, patient, body, if_match)
    response.headers["ETag"] = etag_of(patient)
    return PatientOut.model_validate(patient)


@router.get("/{patient_pk}", response_model=PatientOut)
def read_patient(
    project_id: int, patient_pk: int, response: Response, caller: CurrentUser, db: SessionDep
) -> PatientOut:
    """A patient of this project (or a subproject) by id."""
    patient = service.read_patient(db, caller, project_id, patient_pk)
    response.headers["ETag"] = etag_of(patient)
    return PatientOut.model_validate(patient)


@router.put("/{patient_pk}", response_model=PatientOut, responses=error_responses(409, 412))
def update_patient(
    project_id: int,
    patient_pk: int,
    body: PatientUpdate,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    if_match: IfMatch = None,
) -> PatientOut:
    """Update a patient by id (partial); `project_id` moves it."""
    patient = service.find_patient(db, caller, project_id, patient_pk, Role.USER)
    patient = service.update_patient(db, caller, patient, body, if_match)
    response.headers["ETag"] = etag_of(patient)
    return PatientOut.model_validate(patient)


@patients_api.get("/{patient_uuid}", response_model=PatientDetail)
def read_patient_detail(
    patient_uuid: UUID, response: Response, caller: CurrentUser, db: SessionDep
) -> PatientDetail:
    """A patient wherever it lives, with its studies, datapoints and values."""
    patient = service.find_patient_by_uuid(db, caller, patient_uuid)
    response.headers["ETag"] = etag_of(patient)
    return detail.describe(db, patient)


@patients_api.put("/{patient_uuid}", response_model=PatientDetail, responses=error_responses(409, 412))
def update_patient_detail(
    patient_uuid: UUID,
    body: PatientUpdate,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    if_match: IfMatch = None,
) -> PatientDetail:
    """Update a patient wherever it lives (partial)."""
    patient = service.find_patient_by_uuid(db, caller, patient_uuid, Role.USER)
    patient = service.update_patient(db, caller, patient, body, if_match)
    response.headers["ETag"] = etag_of(patient)
    return detail.describe(db, patient)


@router.delete("/{patient_pk}", response_model=SuccessResponse, responses=error_responses(412))
def delete_patient(
    project_id: int,
    patient_pk: int,
    request: Request,
    background: BackgroundTasks,
    caller: CurrentUser,
    db: SessionDep,
    if_match: IfMatch = None,
) -> SuccessResponse:
    """Delete a patient with its studies, their images and its datapoint values (managers)."""
    deleted = service.delete_patient(db, caller, project_id, patient_pk, if_match)
    # Background tasks run after the response, so after the session's commit.
    state = request.app.state
    background.add_task(remove_unreferenced, state.database, state.storage, deleted.files)
    return SuccessResponse(
        message=f"Deleted patient {patient_pk} with {deleted.studies} studies, "
        f"{deleted.series} series and {deleted.instances} instances"
    )
