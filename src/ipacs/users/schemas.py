"""User request and response bodies."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import Field

from ipacs.auth.passwords import MIN_PASSWORD_LENGTH
from ipacs.schemas import InputModel, OutputModel

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"


class UserOut(OutputModel):
    id: int
    uuid: UUID
    username: str
    full_name: str
    email: str | None
    is_admin: bool
    is_active: bool
    created_at: datetime
    updated_at: datetime


class ProjectGrant(OutputModel):
    project_id: int
    project_name: str
    role: str


class MeOut(UserOut):
    projects: list[ProjectGrant]


class UserCreate(InputModel):
    username: str = Field(pattern=USERNAME_PATTERN)
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=1024)
    full_name: str = Field("", max_length=200)
    email: str | None = Field(None, max_length=254)
    is_admin: bool = False


class UserUpdate(InputModel):
    full_name: str | None = Field(None, max_length=200)
    email: str | None = Field(None, max_length=254)
    password: str | None = Field(None, min_length=MIN_PASSWORD_LENGTH, max_length=1024)
    # Optional re-check of the old password when a user changes its own.
    current_password: str | None = Field(None, max_length=1024)
    is_admin: bool | None = None
    is_active: bool | None = None
