"""Is a project inside another's subtree? Used to scope patients and studies to a route's project."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipacs.models import ProjectClosure


def is_within(session: Session, project_id: int, ancestor_id: int) -> bool:
    """True when `project_id` is `ancestor_id` or one of its descendants."""
    found = session.scalar(
        select(ProjectClosure.depth).where(
            ProjectClosure.ancestor_id == ancestor_id, ProjectClosure.descendant_id == project_id
        )
    )
    return found is not None
