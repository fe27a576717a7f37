"""Datapoint value queries."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from ipacs.models import DatapointValue, DatapointValueVersion


def values_of_patients(session: Session, patient_pks: Iterable[int]) -> list[DatapointValue]:
    """All values of some patients, with creator and editor, in one query."""
    ids = list(patient_pks)
    if not ids:
        return []
    return list(
        session.scalars(
            select(DatapointValue)
            .options(joinedload(DatapointValue.creator), joinedload(DatapointValue.updated_by))
            .where(DatapointValue.patient_id.in_(ids))
            .order_by(DatapointValue.patient_id, DatapointValue.datapoint_id)
        )
    )


def get(session: Session, patient_pk: int, datapoint_id: int) -> DatapointValue | None:
    # populate_existing: after an edit, `updated_by` must be reloaded for the new
    # updated_by_id, not kept from when the value was first read in this session.
    return session.scalars(
        select(DatapointValue)
        .options(joinedload(DatapointValue.creator), joinedload(DatapointValue.updated_by))
        .where(DatapointValue.patient_id == patient_pk, DatapointValue.datapoint_id == datapoint_id)
        .execution_options(populate_existing=True)
    ).first()


def history(session: Session, value_id: int) -> list[DatapointValueVersion]:
    return list(
        session.scalars(
            select(DatapointValueVersion)
            .options(
                joinedload(DatapointValueVersion.changed_by), joinedload(DatapointValueVersion.replaced_by)
            )
            .where(DatapointValueVersion.value_id == value_id)
            .order_by(DatapointValueVersion.version.desc())
        )
    )
