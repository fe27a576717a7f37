"""/users and /users/me."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from ipacs.api.deps import CurrentUser, SessionDep
from ipacs.api.paging import PageDep, set_page_headers
from ipacs.auth.service import Authenticator
from ipacs.etags import etag_of
from ipacs.schemas import error_responses
from ipacs.users import service
from ipacs.users.schemas import MeOut, UserCreate, UserOut, UserUpdate

IfMatch = Annotated[str | None, Header(description="the ETag last read; 412 if it no longer matches")]

router = APIRouter(prefix="/users", tags=["users"], responses=error_responses(400, 401, 403, 404))


def _authenticator(request: Request) -> Authenticator:
    return request.app.state.authenticator  # type: ignore[no-any-return]


@router.get("/me", response_model=MeOut)
def read_me(caller: CurrentUser, db: SessionDep) -> MeOut:
    """The caller, with the projects and roles granted to it."""
    return service.describe_me(db, caller)


@router.get("", response_model=list[UserOut])
def list_users(
    request: Request,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    page: PageDep,
    search: Annotated[str | None, Query(max_length=200)] = None,
) -> list[UserOut]:
    """List user accounts (admin)."""
    result = service.list_users(db, caller, page, search)
    set_page_headers(request, response, result)
    return [UserOut.model_validate(u) for u in result.items]


@router.post("", response_model=UserOut, status_code=201, responses=error_responses(409))
def create_user(
    request: Request, response: Response, body: UserCreate, caller: CurrentUser, db: SessionDep
) -> UserOut:
    """Create a user account (admin)."""
    user = service.create_user(db, caller, body, _authenticator(request).passwords)
    response.headers["ETag"] = etag_of(user)
    return UserOut.model_validate(user)


@router.get("/{username}", response_model=UserOut)
def read_user(username: str, response: Response, caller: CurrentUser, db: SessionDep) -> UserOut:
    """Read a user (admin, or the user itself)."""
    user = service.get_user(db, caller, username)
    response.headers["ETag"] = etag_of(user)
    return UserOut.model_validate(user)


@router.put("/{username}", response_model=UserOut, responses=error_responses(409, 412))
def update_user(
    username: str,
    body: UserUpdate,
    request: Request,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    if_match: IfMatch = None,
) -> UserOut:
    """Update a user (admin; a user may change its own name, email and password)."""
    authenticator = _authenticator(request)
    user = service.update_user(db, caller, username, body, authenticator.passwords, if_match=if_match)
    authenticator.forget_user(user.id)
    response.headers["ETag"] = etag_of(user)
    return UserOut.model_validate(user)


@router.delete("/{username}", response_model=UserOut, responses=error_responses(409, 412))
def disable_user(
    username: str,
    request: Request,
    response: Response,
    caller: CurrentUser,
    db: SessionDep,
    if_match: IfMatch = None,
) -> UserOut:
    """Disable a user (admin): its sessions end at once; nothing is deleted."""
    user = service.disable_user(db, caller, username, if_match=if_match)
    _authenticator(request).forget_user(user.id)
    response.headers["ETag"] = etag_of(user)
    return UserOut.model_validate(user)
