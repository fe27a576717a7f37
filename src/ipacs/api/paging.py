"""Paging for every list: `limit` (<= 1000), `offset` or keyset `after=<last id>`.

Lists answer with `X-Total-Count` and, while more remain, a `Link: <...>; rel="next"`.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, Query, Request, Response

from ipacs.db.paging import MAX_LIMIT, Page, PageParams
from ipacs.errors import InvalidRequest

T = TypeVar("T")


async def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size, at most 1000")] = 100,
    offset: Annotated[int | None, Query(ge=0, description="skip this many rows")] = None,
    after: Annotated[int | None, Query(ge=0, description="keyset: the last id of the previous page")] = None,
) -> PageParams:
    if offset is not None and after is not None:
        raise InvalidRequest(
            "Use either offset or after, not both",
            details=[{"field": "after", "message": "cannot be combined with offset"}],
        )
    return PageParams(limit=limit, offset=offset, after=after)


PageDep = Annotated[PageParams, Depends(page_params)]


def set_page_headers(request: Request, response: Response, page: Page[T]) -> None:
    response.headers["X-Total-Count"] = str(page.total)
    if page.next_after is not None:
        url = request.url.remove_query_params(["after", "offset"]).include_query_params(after=page.next_after)
    elif page.next_offset is not None:
        url = request.url.remove_query_params(["after", "offset"]).include_query_params(
            offset=page.next_offset
        )
    else:
        return
    response.headers["Link"] = f'<{url}>; rel="next"'
