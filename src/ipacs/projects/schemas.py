"""Project, membership and audit bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import Field

from ipacs.schemas import Creator, InputModel, OutputModel

# No "/" in names: a project is addressable by its path, "Trial A/Site 1".
PROJECT_NAME_PATTERN = r"^[^/\x00-\x1f]+$"
# DICOM AE titles: up to 16 characters, no backslash or control characters.
AE_TITLE_PATTERN = r"^[ -\[\]-~]{1,16}$"
RoleLabel = Literal["viewer", "user", "manager"]


class PathItem(OutputModel):
    id: int
    name: str


class ProjectOut(OutputModel):
    id: int
    uuid: UUID
    name: str
    description: str
    parent_id: int | None
    path: list[PathItem] = Field(description="the ancestors, from the top; not the project itself")
    dicom_ae_title: str | None
    created_at: datetime
    updated_at: datetime
    creator: Creator | None
    my_role: RoleLabel | None = Field(description="the caller's effective role (admins: manager)")


class ProjectCreate(InputModel):
    name: str = Field(min_length=1, max_length=200, pattern=PROJECT_NAME_PATTERN)
    description: str = Field("", max_length=10000)
    parent_id: int | None = None
    dicom_ae_title: str | None = Field(None, pattern=AE_TITLE_PATTERN)


class ProjectUpdate(InputModel):
    name: str | None = Field(None, min_length=1, max_length=200, pattern=PROJECT_NAME_PATTERN)
    description: str | None = Field(None, max_length=10000)
    # Present and null: move to the top level (administrators only).
    parent_id: int | None = None
    dicom_ae_title: str | None = Field(None, pattern=AE_TITLE_PATTERN)


class MemberOut(OutputModel):
    project_id: int
    user_id: int
    username: str
    full_name: str
    role: RoleLabel
    created_at: datetime
    updated_at: datetime


class MemberGrant(InputModel):
    role: RoleLabel


class AuditEventOut(OutputModel):
    id: int
    occurred_at: datetime
    user_id: int | None
    username: str | None
    action: str
    entity_type: str
    entity_id: int | None
    entity_uuid: str | None
    project_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
