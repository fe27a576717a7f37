"""Reading the audit log of a project subtree."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipacs.db.paging import Page, PageParams, fetch_page
from ipacs.models import AuditEvent, ProjectClosure


def events_of_subtree(
    session: Session,
    project_id: int,
    params: PageParams,
    *,
    entity_type: str | None = None,
    username: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[AuditEvent]:
    """Events of the project and its subprojects, newest first."""
    subtree = select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == project_id)
    stmt = select(AuditEvent).where(AuditEvent.project_id.in_(subtree))
    if entity_type:
        stmt = stmt.where(AuditEvent.entity_type == entity_type)
    if username:
        stmt = stmt.where(AuditEvent.username == username)
    if since:
        stmt = stmt.where(AuditEvent.occurred_at >= since)
    if until:
        stmt = stmt.where(AuditEvent.occurred_at < until)
    return fetch_page(session, stmt, AuditEvent.id, params, descending=True)
