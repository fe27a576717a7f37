"""Writing audit events. Called by every service that changes data."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy.orm import Session

from ipacs.auth.caller import Caller
from ipacs.models import AuditEvent


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    return value


def snapshot(entity: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The named attributes of an entity as JSON-ready values."""
    return {name: _plain(getattr(entity, name)) for name in fields}


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the fields whose value differs, as (before, after)."""
    keys = [k for k in after if before.get(k) != after[k]]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


def record(
    session: Session,
    caller: Caller | None,
    action: str,
    entity_type: str,
    *,
    entity_id: int | None = None,
    entity_uuid: UUID | None = None,
    project_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEvent(
            user_id=caller.id if caller else None,
            username=caller.username if caller else None,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            entity_uuid=str(entity_uuid) if entity_uuid else None,
            project_id=project_id,
            before=before,
            after=after,
        )
    )
