"""Effective roles and the readable-projects filter.

A role granted on a project applies to all its subprojects; the effective role
is the highest one granted on the project or any ancestor. Both questions are
one join over the closure table, never a walk up the tree in Python.

Rule for every service: fetch inside the caller's scope first and answer 404
for anything the caller cannot read, 403 only for what it can read but may not
change, so a 403 never reveals that something exists.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ipacs.auth.caller import Caller
from ipacs.authz.roles import Role
from ipacs.errors import NotFound, PermissionDenied
from ipacs.models import Membership, Project, ProjectClosure


def readable_project_ids(caller: Caller) -> Select[int]:
    """Ids of every project the caller may read: a subquery to join or IN against."""
    if caller.is_admin:
        return select(Project.id)
    return (
        select(ProjectClosure.descendant_id)
        .join(Membership, Membership.project_id == ProjectClosure.ancestor_id)
        .where(Membership.user_id == caller.id)
    )


def roles_by_project(caller: Caller) -> Select[int, int]:
    """(project_id, effective role rank) for every project the caller has a role on."""
    return (
        select(
            ProjectClosure.descendant_id.label("project_id"),
            func.max(Membership.role).label("role"),
        )
        .join(Membership, Membership.project_id == ProjectClosure.ancestor_id)
        .where(Membership.user_id == caller.id)
        .group_by(ProjectClosure.descendant_id)
    )


def effective_role(session: Session, caller: Caller, project_id: int) -> Role | None:
    """The caller's role on a project; administrators act as managers everywhere."""
    if caller.is_admin:
        return Role.MANAGER
    rank = session.scalar(
        select(func.max(Membership.role))
        .join(ProjectClosure, ProjectClosure.ancestor_id == Membership.project_id)
        .where(ProjectClosure.descendant_id == project_id, Membership.user_id == caller.id)
    )
    return Role(rank) if rank else None


def effective_roles(session: Session, caller: Caller, project_ids: Iterable[int]) -> dict[int, Role]:
    """Effective roles for many projects in one query."""
    ids = list(set(project_ids))
    if caller.is_admin:
        return dict.fromkeys(ids, Role.MANAGER)
    if not ids:
        return {}
    sub = roles_by_project(caller).where(ProjectClosure.descendant_id.in_(ids))
    return {pid: Role(rank) for pid, rank in session.execute(sub)}


def require_role(session: Session, caller: Caller, project_id: int, needed: Role) -> Project:
    """The project, if the caller may read it (else 404) and holds `needed` (else 403)."""
    project = session.get(Project, project_id)
    role = effective_role(session, caller, project_id) if project else None
    if project is None or role is None:
        raise NotFound(f"No project {project_id}")
    if role < needed:
        raise PermissionDenied(f"This needs the {needed.label} role on project {project.name!r}")
    return project


def require_readable(session: Session, caller: Caller, project_id: int) -> None:
    """404 unless the project exists and the caller may read it: `require_role(..., VIEWER)` as one
    query and no ORM object, for read paths that need nothing of the project itself."""
    if caller.is_admin:
        found = session.scalar(select(Project.id).where(Project.id == project_id))
    else:
        # A membership on the project or an ancestor: the project exists (foreign keys).
        found = session.scalar(
            select(Membership.role)
            .join(ProjectClosure, ProjectClosure.ancestor_id == Membership.project_id)
            .where(ProjectClosure.descendant_id == project_id, Membership.user_id == caller.id)
            .limit(1)
        )
    if found is None:
        raise NotFound(f"No project {project_id}")


def check_role(session: Session, caller: Caller, project: Project, needed: Role, what: str) -> None:
    """403 unless the caller holds `needed` on a project it is known to read."""
    role = effective_role(session, caller, project.id)
    if role is None or role < needed:
        raise PermissionDenied(f"{what} needs the {needed.label} role on project {project.name!r}")
