"""Typed factories for test data. Each flushes; the caller commits."""

from __future__ import annotations

import base64

from sqlalchemy.orm import Session

from ipacs.auth.caller import Caller
from ipacs.auth.passwords import Passwords
from ipacs.authz.roles import Role
from ipacs.config import Settings
from ipacs.models import Membership, Project, User
from ipacs.projects import service as project_service
from ipacs.projects.schemas import ProjectCreate

DEFAULT_PASSWORD = "correct-horse-9"


def make_user(
    session: Session,
    settings: Settings,
    username: str = "alice",
    *,
    password: str = DEFAULT_PASSWORD,
    is_admin: bool = False,
    full_name: str = "",
    is_active: bool = True,
) -> User:
    user = User(
        username=username,
        full_name=full_name or username.title(),
        password_hash=Passwords(settings).hash(password),
        is_admin=is_admin,
        is_active=is_active,
    )
    session.add(user)
    session.flush()
    return user


def basic(username: str, password: str = DEFAULT_PASSWORD) -> dict[str, str]:
    """The Authorization header for HTTP Basic."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def as_caller(user: User) -> Caller:
    return Caller.from_user(user)


def make_project(
    session: Session,
    creator: User,
    name: str = "Trial",
    *,
    parent: Project | None = None,
    description: str = "",
    dicom_ae_title: str | None = None,
) -> Project:
    """A project made through the service, so the closure table is right."""
    admin = Caller(id=creator.id, username=creator.username, full_name=creator.full_name, is_admin=True)
    data = ProjectCreate(
        name=name,
        description=description,
        parent_id=parent.id if parent else None,
        dicom_ae_title=dicom_ae_title,
    )
    return project_service.create_project(session, admin, data)


def grant(session: Session, project: Project, user: User, role: str) -> None:
    session.add(Membership(project_id=project.id, user_id=user.id, role=Role.parse(role)))
    session.flush()
