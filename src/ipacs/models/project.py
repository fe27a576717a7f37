"""Projects, their ancestry (a closure table) and role grants."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, SmallInteger, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ipacs import clock
from ipacs.db.base import Base, UTCDateTime
from ipacs.models.mixins import EntityMixin
from ipacs.models.user import User


class Project(EntityMixin, Base):
    __tablename__ = "projects"
    __table_args__ = (
        # Sibling names are unique; top-level uniqueness (parent NULL) is
        # checked by the service because NULLs never collide in an index.
        UniqueConstraint("parent_id", "name"),
    )

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), nullable=True, index=True)
    dicom_ae_title: Mapped[str | None] = mapped_column(String(16), unique=True, nullable=True)


class ProjectClosure(Base):
    """One row per (ancestor, descendant) pair, including (p, p) at depth 0.

    Effective roles and "which projects may this user read" become one join
    instead of a walk up the tree, on SQLite and PostgreSQL alike.
    """

    __tablename__ = "project_closure"
    __table_args__ = (Index("ix_project_closure_descendant", "descendant_id", "ancestor_id"),)

    ancestor_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    descendant_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    depth: Mapped[int] = mapped_column(Integer)


class Membership(Base):
    """A role granted to a user on a project (and so on all its subprojects)."""

    __tablename__ = "memberships"
    __table_args__ = (Index("ix_memberships_user_project", "user_id", "project_id", "role"),)

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    # 1 viewer, 2 user, 3 manager: an integer so MAX() gives the effective role.
    role: Mapped[int] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now, onupdate=clock.now)
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="raise")
