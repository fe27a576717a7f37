"""Run a list query one page at a time, with its total count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from ipacs.errors import InvalidRequest

T = TypeVar("T")
MAX_LIMIT = 1000


@dataclass(frozen=True)
class PageParams:
    limit: int = 100
    offset: int | None = None
    after: int | None = None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    # The id to pass as `after` for the next page (keyset, id order).
    next_after: int | None
    # The offset of the next page (offset paging, or another order).
    next_offset: int | None


def fetch_page(
    session: Session,
    stmt: Select[T],
    id_column: InstrumentedAttribute[int],
    params: PageParams,
    *,
    order_by: tuple[Any, ...] = (),
    descending: bool = False,
) -> Page[T]:
    """One page of `stmt`, ordered by `order_by` then by id (newest first if `descending`).

    Keyset paging (`after`) needs id order; with another order, use `offset`.
    The total is counted only when the page cannot tell it: a page that is not
    full and starts at a known position ends the list (most lookups, e.g. by
    PatientID, are one short page, and the count doubled their cost).
    """
    count = select(func.count()).select_from(stmt.order_by(None).subquery())
    keyset = not order_by and params.offset is None
    if params.after is not None:
        if order_by:
            raise InvalidRequest(
                "`after` pages in id order; use `offset` with another sort",
                details=[{"field": "after", "message": "not allowed with this sort"}],
            )
        stmt = stmt.where(id_column < params.after if descending else id_column > params.after)
    id_order = id_column.desc() if descending else id_column.asc()
    stmt = stmt.order_by(*order_by, id_order).limit(params.limit + 1)
    if params.offset:
        stmt = stmt.offset(params.offset)
    rows = list(session.scalars(stmt).unique())
    more = len(rows) > params.limit
    items = rows[: params.limit]
    if not more and params.after is None and (items or not params.offset):
        total = (params.offset or 0) + len(items)
    else:
        total = session.scalar(count) or 0
    next_after = next_offset = None
    if more:
        if keyset:
            next_after = getattr(items[-1], id_column.key)
        else:
            next_offset = (params.offset or 0) + params.limit
    return Page(items=items, total=total, next_after=next_after, next_offset=next_offset)
