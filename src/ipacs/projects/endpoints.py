"""/projects: the tree, members and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request, Response

from ipacs.api.deps import CurrentUser, SessionDep
from ipacs.api.headers import IfMatch
from ipacs.api.paging import PageDep, set_page_headers
from ipacs.dicom.removal import remove_unreferenced
from ipacs.etags import etag_of
from ipacs.projects import service
from ipacs.projects.schemas import (
    AuditEventOut,
    MemberGrant,
    MemberOut,
    ProjectCreate,
    ProjectOut,
    ProjectUpdate,
)
from ipacs.schemas import SuccessResponse, error_responses

router = APIRouter(prefix="/projects", tags=["projects"], responses=error_responses(400, 401, 403, 404))


@router.get("", response_model=list[ProjectOut])
def list_projects(
    request: Request,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    page: PageDep,
    search: Annotated[str | None, Query(max_length=200, description="in name and description")] = None,
    parent_id: Annotated[int | None, Query(description="only children of this project")] = None,
) -> list[ProjectOut]:
    """All projects the caller can see."""
    result = service.list_projects(db, caller, page, search=search, parent_id=parent_id)
    set_page_headers(request, response, result)
    return service.present(db, caller, result.items)


@router.post("", response_model=ProjectOut, status_code=201, responses=error_responses(409))
def create_project(
    body: ProjectCreate, response: Response, caller: CurrentUser, db: SessionDep
) -> ProjectOut:
    """Create a project (top level: admin; subproject: manager of the parent)."""
    project = service.create_project(db, caller, body)
    response.headers["ETag"] = etag_of(project)
    return service.present(db, caller, [project])[0]


@router.get("/{project_id}", response_model=ProjectOut)
def read_project(project_id: int, response: Response, caller: CurrentUser, db: SessionDep) -> ProjectOut:
    """One project."""
    project = service.get_project(db, caller, project_id)
    response.headers["ETag"] = etag_of(project)
    return service.present(db, caller, [project])[0]


@router.put("/{project_id}", response_model=ProjectOut, responses=error_responses(409, 412))
def update_project(
    project_id: int,
    body: ProjectUpdate,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    if_match: IfMatch = None,
) -> ProjectOut:
    """Update a project (partial; managers). `parent_id` moves it."""
    project = service.update_project(db, caller, project_id, body, if_match)
    response.headers["ETag"] = etag_of(project)
    return service.present(db, caller, [project])[0]


@router.delete("/{project_id}", response_model=SuccessResponse, responses=error_responses(409, 412))
def delete_project(
    project_id: int,
    request: Request,
    background: BackgroundTasks,
    caller: CurrentUser,
    db: SessionDep,
    force: Annotated[bool, Query(description="also delete subprojects, patients and their data")] = False,
    if_match: IfMatch = None,
) -> SuccessResponse:
    """Delete a project (managers); refused while it holds patients or subprojects unless force=true."""
    counts, files = service.delete_project(db, caller, project_id, force=force, if_match=if_match)
    # Background tasks run after the response, so after the session's commit.
    state = request.app.state
    background.add_task(remove_unreferenced, state.database, state.storage, files)
    summary = ", ".join(f"{n} {what}" for what, n in counts.items())
    return SuccessResponse(message=f"Deleted {summary}")


@router.get("/{project_id}/subprojects", response_model=list[ProjectOut])
def list_subprojects(
    project_id: int,
    request: Request,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    page: PageDep,
    recursive: Annotated[bool, Query(description="all descendants, not only children")] = False,
) -> list[ProjectOut]:
    """Direct children of a project; `recursive=true` for all descendants."""
    result = service.list_subprojects(db, caller, project_id, page, recursive=recursive)
    set_page_headers(request, response, result)
    return service.present(db, caller, result.items)


@router.get("/{project_id}/members", response_model=list[MemberOut])
def list_members(
    project_id: int, request: Request, response: Response, caller: CurrentUser, db: SessionDep, page: PageDep
) -> list[MemberOut]:
    """Roles granted directly on this project (managers)."""
    result = service.list_members(db, caller, project_id, page)
    set_page_headers(request, response, result)
    return result.items


@router.put("/{project_id}/members/{username}", response_model=MemberOut)
def grant_member(
    project_id: int, username: str, body: MemberGrant, caller: CurrentUser, db: SessionDep
) -> MemberOut:
    """Grant (or change) a user's role on this project (managers)."""
    return service.grant_role(db, caller, project_id, username, body.role)


@router.delete("/{project_id}/members/{username}", response_model=SuccessResponse)
def revoke_member(project_id: int, username: str, caller: CurrentUser, db: SessionDep) -> SuccessResponse:
    """Revoke a user's role on this project (managers)."""
    service.revoke_role(db, caller, project_id, username)
    return SuccessResponse(message=f"Revoked the role of {username}")


@router.get("/{project_id}/audit", response_model=list[AuditEventOut])
def list_audit(
    project_id: int,
    request: Request,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    page: PageDep,
    entity_type: Annotated[str | None, Query(max_length=32)] = None,
    username: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
) -> list[AuditEventOut]:
    """The audit log of the project and its subprojects, newest first (managers)."""
    result = service.list_audit(
        db, caller, project_id, page, entity_type=entity_type, username=username, since=since, until=until
    )
    set_page_headers(request, response, result)
    return [AuditEventOut.model_validate(e) for e in result.items]
