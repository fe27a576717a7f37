"""Series and instance queries."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipacs.db.paging import Page, PageParams, fetch_page
from ipacs.models import Instance, Series


def series_of_study(session: Session, study_id: int, params: PageParams) -> Page[Series]:
    return fetch_page(session, select(Series).where(Series.study_id == study_id), Series.id, params)


def instances_of_study(session: Session, study_id: int) -> list[tuple[Series, Instance]]:
    """Every instance of a study with its series, in series then instance order."""
    rows = session.execute(
        select(Series, Instance)
        .join(Instance, Instance.series_id == Series.id)
        .where(Series.study_id == study_id)
        .order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
    )
    return [(s, i) for s, i in rows]
