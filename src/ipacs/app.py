"""create_app(): routers, middleware, error handlers and the process's shared state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import PlainTextResponse

from ipacs import __version__
from ipacs.api import threads
from ipacs.api.middleware import (
    BodySizeLimitMiddleware,
    SecurityHeadersMiddleware,
    SessionCookieMiddleware,
    UrlGuardMiddleware,
)
from ipacs.api.openapi import install_openapi
from ipacs.auth import endpoints as auth_endpoints
from ipacs.auth.service import Authenticator
from ipacs.auth.sessions import count_live_sessions
from ipacs.config import Settings, get_settings
from ipacs.datapoints import endpoints as datapoint_endpoints
from ipacs.datapoints import import_endpoints as datapoint_import_endpoints
from ipacs.datapoints import value_endpoints
from ipacs.db.engine import Database
from ipacs.dicom import checksum_endpoints as dicom_checksum_endpoints
from ipacs.dicom import endpoints as dicom_endpoints
from ipacs.dicom.dicomweb import endpoints as dicomweb_endpoints
from ipacs.dicom.ingest import Ingestor
from ipacs.dicom.storage import FileStore
from ipacs.errors import install_error_handlers
from ipacs.patients import endpoints as patient_endpoints
from ipacs.projects import endpoints as project_endpoints
from ipacs.search import endpoints as search_endpoints
from ipacs.studies import endpoints as study_endpoints
from ipacs.telemetry.metrics import ACTIVE_SESSIONS
from ipacs.telemetry.metrics import render as render_metrics
from ipacs.telemetry.request_log import RequestLogMiddleware
from ipacs.users import endpoints as user_endpoints

API_PREFIX = "/api/v1.0"


def create_app(settings: Settings | None = None, database: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    if database is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database = Database(
            settings.effective_database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
        )

    storage = FileStore(settings.data_dir / "store")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.upload_limiter = threads.configure(settings)
        receiver = None
        if settings.dicom_port and settings.dicom_in_app:
            # Imported here: HTTP workers of `serve --workers N` leave the DICOM port to the
            # supervisor and need not carry pynetdicom (~7 MB of each process's memory).
            from ipacs.dicom.receiver import Receiver

            receiver = Receiver(
                database, storage, settings.dicom_ae_title, max_instance_bytes=settings.max_instance_bytes
            )
            receiver.start(settings.host, settings.dicom_port)
        try:
            yield
        finally:
            if receiver is not None:
                receiver.stop()
            database.dispose()

    app = FastAPI(
        title="iPACS",
        version=__version__,
        description="Research-imaging archive: projects, patients, studies and datapoints.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.authenticator = Authenticator(settings, database)
    app.state.storage = storage
    app.state.ingestor = Ingestor(database, storage)

    install_error_handlers(app)
    install_openapi(app)
    api = APIRouter(prefix=API_PREFIX)
    api.include_router(auth_endpoints.router)
    api.include_router(user_endpoints.router)
    api.include_router(project_endpoints.router)
    # Before the definitions router, whose /datapoints/{datapoint_id} would catch /datapoints/search.
    api.include_router(search_endpoints.router)
    api.include_router(datapoint_endpoints.router)
    api.include_router(patient_endpoints.router)
    api.include_router(patient_endpoints.patients_api)
    api.include_router(study_endpoints.router)
    api.include_router(value_endpoints.router)
    api.include_router(datapoint_import_endpoints.router)
    api.include_router(dicom_endpoints.router)
    api.include_router(dicom_checksum_endpoints.router)
    app.include_router(api)
    app.include_router(dicomweb_endpoints.all_projects)
    app.include_router(dicomweb_endpoints.one_project)

    @app.get("/healthz", tags=["operations"], response_class=PlainTextResponse)
    def healthz() -> str:
        """Liveness: answers without authentication."""
        return "ok"

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics() -> Response:
        """Prometheus metrics (aggregate counters only; no authentication)."""
        with database.session() as session:
            ACTIVE_SESSIONS.set(count_live_sessions(session, settings.session_idle_timeout))
        body, content_type = render_metrics()
        return Response(body, media_type=content_type)

    # Outermost last: the cookie and headers reach every response, errors included.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        idle_timeout=settings.body_idle_timeout,
        exempt_suffixes=("/dicom",),
        exempt_prefixes=("/dicomweb/",),  # STOW-RS enforces the DICOM upload limits itself
    )
    app.add_middleware(UrlGuardMiddleware, max_query_bytes=settings.max_query_bytes)
    app.add_middleware(SessionCookieMiddleware, settings=settings)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestLogMiddleware)
    return app


def create_app_from_env() -> FastAPI:
    """The factory uvicorn workers call (`ipacs.app:create_app_from_env`)."""
    return create_app()
