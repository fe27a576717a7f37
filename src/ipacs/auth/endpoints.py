"""POST /logout."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ipacs.api.deps import CurrentUser
from ipacs.api.middleware import SESSION_COOKIE
from ipacs.auth.service import Authenticator
from ipacs.schemas import SuccessResponse, error_responses

router = APIRouter(tags=["sessions"], responses=error_responses(401))


@router.post("/logout", response_model=SuccessResponse)
def logout(request: Request, response: Response, caller: CurrentUser) -> SuccessResponse:
    """End the current session (the cookie stops working at once)."""
    authenticator: Authenticator = request.app.state.authenticator
    for token in (
        request.cookies.get(SESSION_COOKIE),
        getattr(request.state, "new_session_token", None),
    ):
        if token:
            authenticator.logout(token)
    request.state.new_session_token = None
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return SuccessResponse(message=f"Logged out {caller.username}")
