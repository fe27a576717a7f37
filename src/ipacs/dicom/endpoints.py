"""DICOM over the REST API: upload, series listing, study archive download."""

from __future__ import annotations

from collections.abc import Iterator

import anyio.from_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ipacs.api import threads
from ipacs.api.deps import CurrentUser, SessionDep
from ipacs.api.paging import PageDep, set_page_headers
from ipacs.auth.caller import Caller
from ipacs.db.engine import Database
from ipacs.dicom import service
from ipacs.dicom.archive import stream_zip
from ipacs.dicom.schemas import SeriesOut, StudyRef, UploadFailure, UploadSummaryOut
from ipacs.dicom.upload import Upload, UploadLimits
from ipacs.schemas import error_responses

router = APIRouter(
    prefix="/projects/{project_id}", tags=["dicom"], responses=error_responses(400, 401, 403, 404)
)


def _check_upload(database: Database, caller: Caller, project_id: int) -> None:
    with database.session() as session:
        service.check_upload(session, caller, project_id)


def body_chunks(request: Request) -> Iterator[bytes]:
    """The request body as a blocking iterator, for code running in a worker thread."""
    stream = request.stream()
    while True:
        try:
            chunk = anyio.from_thread.run(stream.__anext__)
        except StopAsyncIteration:
            return
        if chunk:
            yield chunk


@router.post(
    "/dicom",
    response_model=UploadSummaryOut,
    responses=error_responses(413, 415),
    openapi_extra={
        "requestBody": {
            "content": {
                "application/dicom": {"schema": {"type": "string", "format": "binary"}},
                "application/zip": {"schema": {"type": "string", "format": "binary"}},
                "multipart/related": {"schema": {"type": "string", "format": "binary"}},
            },
            "required": True,
        }
    },
)
async def upload_dicom(project_id: int, request: Request, caller: CurrentUser) -> UploadSummaryOut:
    """Upload DICOM (one file, a zip, or multipart/related); each file is stored or reported."""
    state = request.app.state
    await run_in_threadpool(_check_upload, state.database, caller, project_id)
    limits = UploadLimits(state.settings.max_upload_bytes, state.settings.max_instance_bytes)
    upload = Upload(state.storage, state.ingestor, project_id, limits, actor=caller)
    summary = await threads.run_upload(
        request, upload.run, request.headers.get("content-type"), body_chunks(request)
    )
    return UploadSummaryOut(
        stored=summary.stored,
        duplicates=summary.duplicates,
        failed=[UploadFailure(**f) for f in summary.failed],
        studies=[StudyRef.model_validate(s) for s in summary.studies.values()],
    )


@router.get("/patients/{patient_pk}/studies/{study_pk}/series", response_model=list[SeriesOut])
def list_series(
    project_id: int,
    patient_pk: int,
    study_pk: int,
    request: Request,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    page: PageDep,
) -> list[SeriesOut]:
    """The study's series with their instance counts."""
    result = service.list_series(db, caller, project_id, patient_pk, study_pk, page)
    set_page_headers(request, response, result)
    return [SeriesOut.model_validate(s) for s in result.items]


@router.get(
    "/patients/{patient_pk}/studies/{study_pk}/archive",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
def download_archive(
    project_id: int, patient_pk: int, study_pk: int, request: Request, caller: CurrentUser, db: SessionDep
) -> StreamingResponse:
    """The study's DICOM files as a zip, streamed as it is built."""
    filename, entries = service.archive_plan(db, caller, project_id, patient_pk, study_pk)
    return StreamingResponse(
        stream_zip(request.app.state.storage, entries),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
