"""/projects/{id}/patients/{id}/studies."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request, Response

from ipacs.api.deps import CurrentUser, SessionDep
from ipacs.api.headers import IfMatch
from ipacs.api.paging import PageDep, set_page_headers
from ipacs.dicom.removal import remove_unreferenced
from ipacs.etags import etag_of
from ipacs.schemas import SuccessResponse, error_responses
from ipacs.studies import service
from ipacs.studies.schemas import PostStudyResponse, StudyCreate, StudyOut, StudyUpdate

router = APIRouter(
    prefix="/projects/{project_id}/patients/{patient_pk}/studies",
    tags=["studies"],
    responses=error_responses(400, 401, 403, 404),
)


@router.get("", response_model=list[StudyOut])
def list_studies(
    project_id: int,
    patient_pk: int,
    request: Request,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    page: PageDep,
) -> list[StudyOut]:
    """The patient's studies in this project and its subprojects."""
    result = service.list_studies(db, caller, project_id, patient_pk, page)
    set_page_headers(request, response, result)
    return [StudyOut.model_validate(s) for s in result.items]


@router.post("", response_model=PostStudyResponse, status_code=201, responses=error_responses(409))
def create_study(
    project_id: int,
    patient_pk: int,
    body: StudyCreate,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
) -> PostStudyResponse:
    """Create a study record; a StudyInstanceUID is generated when none is given."""
    study = service.create_study(db, caller, project_id, patient_pk, body)
    response.headers["ETag"] = etag_of(study)
    return PostStudyResponse(id=study.id, uuid=study.uuid, study_instance_uid=study.study_instance_uid)


@router.get("/{study_pk}", response_model=StudyOut)
def read_study(
    project_id: int, patient_pk: int, study_pk: int, response: Response, caller: CurrentUser, db: SessionDep
) -> StudyOut:
    """One study of the patient."""
    study = service.read_study(db, caller, project_id, patient_pk, study_pk)
    response.headers["ETag"] = etag_of(study)
    return StudyOut.model_validate(study)


@router.put("/{study_pk}", response_model=StudyOut, responses=error_responses(409, 412))
def update_study(
    project_id: int,
    patient_pk: int,
    study_pk: int,
    body: StudyUpdate,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    if_match: IfMatch = None,
) -> StudyOut:
    """Update a study (description, visit, status, accession_number, date, time, project)."""
    study = service.update_study(db, caller, project_id, patient_pk, study_pk, body, if_match)
    response.headers["ETag"] = etag_of(study)
    return StudyOut.model_validate(study)


@router.delete("/{study_pk}", response_model=SuccessResponse, responses=error_responses(412))
def delete_study(
    project_id: int,
    patient_pk: int,
    study_pk: int,
    request: Request,
    background: BackgroundTasks,
    caller: CurrentUser,
    db: SessionDep,
    if_match: IfMatch = None,
) -> SuccessResponse:
    """Delete a study with its series and images (managers)."""
    deleted = service.delete_study(db, caller, project_id, patient_pk, study_pk, if_match)
    # Background tasks run after the response, so after the session's commit.
    state = request.app.state
    background.add_task(remove_unreferenced, state.database, state.storage, deleted.files)
    return SuccessResponse(
        message=f"Deleted study {study_pk} with {deleted.series} series and {deleted.instances} instances"
    )
