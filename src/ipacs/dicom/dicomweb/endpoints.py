"""DICOMweb routes, served twice: at /dicomweb (every project the caller may read)
and at /dicomweb/projects/{project_id} (that project and its subprojects, and
the root STOW-RS stores into). Authentication and permissions are the REST API's.

No `from __future__ import annotations` here: the routes are built in a
function, and FastAPI must see their `RootDep` annotation as an object.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ipacs.api import threads
from ipacs.api.deps import CurrentUser, SessionDep
from ipacs.db.engine import Database
from ipacs.dicom import service as dicom_service
from ipacs.dicom.dicomweb import service, stow, wado
from ipacs.dicom.dicomweb.qido import Level, parse_query
from ipacs.dicom.dicomweb.repository import Scope
from ipacs.dicom.dicomweb.service import SearchResult, StoredFile
from ipacs.dicom.endpoints import body_chunks
from ipacs.dicom.storage import FileStore
from ipacs.dicom.upload import UploadLimits
from ipacs.errors import InvalidRequest
from ipacs.schemas import error_responses

PREFIX = "/dicomweb"
PROJECT_PREFIX = "/dicomweb/projects/{project_id}"
_JSON: dict[int | str, dict[str, Any]] = {200: {"content": {wado.DICOM_JSON: {}}}}
# Responses up to this size are read whole before they are sent; larger ones stream.
WHOLE_RESPONSE_BYTES = 4 * 1024 * 1024
_MULTIPART: dict[int | str, dict[str, Any]] = {200: {"content": {"multipart/related": {}, wado.DICOM: {}}}}


@dataclass(frozen=True)
class Root:
    """The caller's scope and the service root URL its RetrieveURLs start with."""

    scope: Scope
    url: str


def _storage(request: Request) -> FileStore:
    storage: FileStore = request.app.state.storage
    return storage


async def _all_projects(request: Request, caller: CurrentUser) -> Root:
    return Root(Scope(caller), f"{str(request.base_url).rstrip('/')}{PREFIX}")


def _one_project(project_id: int, request: Request, caller: CurrentUser, db: SessionDep) -> Root:
    scope = service.open_scope(db, caller, project_id)
    return Root(scope, f"{str(request.base_url).rstrip('/')}{PREFIX}/projects/{project_id}")


def _search_response(result: SearchResult) -> Response:
    headers = {"X-Total-Count": str(result.total)}
    if result.warnings:
        headers["Warning"] = ", ".join(f'299 ipacs "{w}"' for w in result.warnings)
    return Response(orjson.dumps(result.items), media_type=wado.DICOM_JSON, headers=headers)


def _retrieve_response(request: Request, files: list[StoredFile], instance_level: bool = False) -> Response:
    accept = wado.parse_accept(request.headers.get("accept"))
    packaging = wado.choose_packaging(accept, files, instance_level)
    storage = _storage(request)
    if packaging is wado.Packaging.SINGLE:
        body = storage.read_chunks(files[0].storage_key)
        media_type = wado.DICOM
    else:
        boundary = wado.new_boundary()
        body = wado.multipart_stream(storage, files, boundary)
        media_type = wado.multipart_content_type(boundary)
    if sum(f.size_bytes for f in files) <= WHOLE_RESPONSE_BYTES:
        # Read here, in the endpoint's worker thread: a streamed body costs a thread-pool
        # trip per chunk, which for one instance took longer than sending it.
        return Response(b"".join(body), media_type=media_type)
    return StreamingResponse(body, media_type=media_type)


def _metadata_response(request: Request, files: list[StoredFile]) -> Response:
    wado.require_json(wado.parse_accept(request.headers.get("accept")))
    return StreamingResponse(wado.metadata_stream(_storage(request), files), media_type=wado.DICOM_JSON)


def _query(request: Request, level: Level) -> Any:
    wado.require_json(wado.parse_accept(request.headers.get("accept")))
    return parse_query(list(request.query_params.multi_items()), level)


def build_router(scoped: bool) -> APIRouter:
    """The DICOMweb routes for one root: all readable projects, or one project."""
    root_dependency: Callable[..., Any] = _one_project if scoped else _all_projects
    RootDep = Annotated[Root, Depends(root_dependency)]
    router = APIRouter(
        prefix=PROJECT_PREFIX if scoped else PREFIX,
        tags=["dicomweb"],
        responses=error_responses(400, 401, 404, 406),
    )

    @router.get("/studies", response_class=Response, responses=_JSON)
    def search_studies(request: Request, root: RootDep, db: SessionDep) -> Response:
        """QIDO-RS: search for studies."""
        query = _query(request, Level.STUDY)
        return _search_response(service.search_studies(db, _storage(request), root.scope, query, root.url))

    @router.get("/series", response_class=Response, responses=_JSON)
    def search_all_series(request: Request, root: RootDep, db: SessionDep) -> Response:
        """QIDO-RS: search for series in every study."""
        query = _query(request, Level.SERIES)
        result = service.search_series(db, _storage(request), root.scope, query, root.url, None)
        return _search_response(result)

    @router.get("/instances", response_class=Response, responses=_JSON)
    def search_all_instances(request: Request, root: RootDep, db: SessionDep) -> Response:
        """QIDO-RS: search for instances in every study."""
        query = _query(request, Level.INSTANCE)
        result = service.search_instances(db, _storage(request), root.scope, query, root.url, None, None)
        return _search_response(result)

    @router.get("/studies/{study}/series", response_class=Response, responses=_JSON)
    def search_series(study: str, request: Request, root: RootDep, db: SessionDep) -> Response:
        """QIDO-RS: search for the series of a study."""
        query = _query(request, Level.SERIES)
        result = service.search_series(db, _storage(request), root.scope, query, root.url, study)
        return _search_response(result)

    @router.get("/studies/{study}/instances", response_class=Response, responses=_JSON)
    def search_study_instances(study: str, request: Request, root: RootDep, db: SessionDep) -> Response:
        """QIDO-RS: search for the instances of a study."""
        query = _query(request, Level.INSTANCE)
        result = service.search_instances(db, _storage(request), root.scope, query, root.url, study, None)
        return _search_response(result)

    @router.get("/studies/{study}/series/{series}/instances", response_class=Response, responses=_JSON)
    def search_series_instances(
        study: str, series: str, request: Request, root: RootDep, db: SessionDep
    ) -> Response:
        """QIDO-RS: search for the instances of a series."""
        query = _query(request, Level.INSTANCE)
        result = service.search_instances(db, _storage(request), root.scope, query, root.url, study, series)
        return _search_response(result)

    @router.get("/studies/{study}", response_class=StreamingResponse, responses=_MULTIPART)
    def retrieve_study(study: str, request: Request, root: RootDep, db: SessionDep) -> Response:
        """WADO-RS: every instance of a study, as stored."""
        return _retrieve_response(request, service.files_to_retrieve(db, root.scope, study))

    @router.get("/studies/{study}/series/{series}", response_class=StreamingResponse, responses=_MULTIPART)
    def retrieve_series(study: str, series: str, request: Request, root: RootDep, db: SessionDep) -> Response:
        """WADO-RS: every instance of a series, as stored."""
        return _retrieve_response(request, service.files_to_retrieve(db, root.scope, study, series))

    @router.get(
        "/studies/{study}/series/{series}/instances/{instance}",
        response_class=StreamingResponse,
        responses=_MULTIPART,
    )
    def retrieve_instance(
        study: str, series: str, instance: str, request: Request, root: RootDep, db: SessionDep
    ) -> Response:
        """WADO-RS: one instance, as stored."""
        files = service.files_to_retrieve(db, root.scope, study, series, instance)
        return _retrieve_response(request, files, instance_level=True)

    @router.get("/studies/{study}/metadata", response_class=StreamingResponse, responses=_JSON)
    def study_metadata(study: str, request: Request, root: RootDep, db: SessionDep) -> Response:
        """WADO-RS: the headers of every instance of a study, without bulk data."""
        return _metadata_response(request, service.files_to_retrieve(db, root.scope, study))

    @router.get(
        "/studies/{study}/series/{series}/metadata", response_class=StreamingResponse, responses=_JSON
    )
    def series_metadata(study: str, series: str, request: Request, root: RootDep, db: SessionDep) -> Response:
        """WADO-RS: the headers of every instance of a series, without bulk data."""
        return _metadata_response(request, service.files_to_retrieve(db, root.scope, study, series))

    @router.get(
        "/studies/{study}/series/{series}/instances/{instance}/metadata",
        response_class=StreamingResponse,
        responses=_JSON,
    )
    def instance_metadata(
        study: str, series: str, instance: str, request: Request, root: RootDep, db: SessionDep
    ) -> Response:
        """WADO-RS: one instance's header, without bulk data."""
        files = service.files_to_retrieve(db, root.scope, study, series, instance)
        return _metadata_response(request, files)

    @router.get("/wado", response_class=StreamingResponse, responses={200: {"content": {wado.DICOM: {}}}})
    def wado_uri(
        request: Request,
        root: RootDep,
        db: SessionDep,
        request_type: Annotated[Literal["WADO"], Query(alias="requestType")],
        study_uid: Annotated[str, Query(alias="studyUID")],
        series_uid: Annotated[str, Query(alias="seriesUID")],
        object_uid: Annotated[str, Query(alias="objectUID")],
        content_type: Annotated[str | None, Query(alias="contentType")] = None,
        transfer_syntax: Annotated[str | None, Query(alias="transferSyntax")] = None,
    ) -> Response:
        """WADO-URI: one instance as stored (contentType=application/dicom), for viewers that use it."""
        files = service.files_to_retrieve(db, root.scope, study_uid, series_uid, object_uid)
        wado.check_wado_uri(content_type, transfer_syntax, files[0])
        return StreamingResponse(_storage(request).read_chunks(files[0].storage_key), media_type=wado.DICOM)

    if scoped:
        router.add_api_route(
            "/studies",
            store_instances,
            methods=["POST"],
            response_class=Response,
            responses={**_JSON, **error_responses(403, 409, 413, 415)},
            openapi_extra={
                "requestBody": {
                    "content": {"multipart/related": {"schema": {"type": "string", "format": "binary"}}},
                    "required": True,
                }
            },
        )
    else:
        router.add_api_route(
            "/studies", store_without_project, methods=["POST"], responses=error_responses(400)
        )
    return router


def _check_store(database: Database, caller: CurrentUser, project_id: int) -> None:
    with database.session() as session:
        dicom_service.check_upload(session, caller, project_id)


async def store_instances(project_id: int, request: Request, caller: CurrentUser) -> Response:
    """STOW-RS: store instances into this project (`user` role needed)."""
    state = request.app.state
    wado.require_json(wado.parse_accept(request.headers.get("accept")))
    await run_in_threadpool(_check_store, state.database, caller, project_id)
    limits = UploadLimits(state.settings.max_upload_bytes, state.settings.max_instance_bytes)
    outcomes = await threads.run_upload(
        request,
        stow.store,
        state.database,
        state.storage,
        project_id,
        limits,
        request.headers.get("content-type"),
        body_chunks(request),
    )
    root = f"{str(request.base_url).rstrip('/')}{PREFIX}/projects/{project_id}"
    status, body = stow.response(outcomes, root)
    return Response(orjson.dumps(body), status_code=status, media_type=wado.DICOM_JSON)


def store_without_project(caller: CurrentUser) -> Response:
    """STOW-RS needs a project: POST to /dicomweb/projects/{project_id}/studies."""
    raise InvalidRequest(
        "STOW-RS stores into a project: POST to /dicomweb/projects/{project_id}/studies "
        "(see GET /api/v1.0/projects for the ids you may use)",
        [{"field": "project_id", "message": "required in the path"}],
    )


all_projects = build_router(scoped=False)
one_project = build_router(scoped=True)
