"""User queries."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipacs.db.paging import Page, PageParams, fetch_page
from ipacs.models import Membership, Project, User


def get_by_username(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).first()


def count_admins(session: Session) -> int:
    stmt = select(func.count()).select_from(User).where(User.is_admin, User.is_active)
    return session.scalar(stmt) or 0


def list_users(session: Session, params: PageParams, search: str | None) -> Page[User]:
    stmt = select(User)
    if search:
        pattern = f"%{search.lower()}%"
        stmt = stmt.where(func.lower(User.username).like(pattern) | func.lower(User.full_name).like(pattern))
    return fetch_page(session, stmt, User.id, params)


def grants_of(session: Session, user_id: int) -> list[tuple[int, str, int]]:
    """(project id, project name, role rank) granted directly to the user."""
    rows = session.execute(
        select(Project.id, Project.name, Membership.role)
        .join(Membership, Membership.project_id == Project.id)
        .where(Membership.user_id == user_id)
        .order_by(Project.id)
    )
    return [(r[0], r[1], r[2]) for r in rows]


def first_admin(session: Session) -> User | None:
    return session.scalars(select(User).where(User.is_admin, User.is_active).order_by(User.id)).first()
