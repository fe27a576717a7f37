"""Advanced search (StringQuery) as an iterator over every match, page after page."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

from ipacs.client.errors import IpacsClientError
from ipacs.client.models import PatientResult, SearchResponse, StudyResult
from ipacs.client.transport import MAX_PAGE, Transport

Target = Literal["patients", "studies"]


class SearchResults:
    """The matches of a query, fetched lazily `page_size` at a time (keyset on `next_after`).

    Iterate it for PatientResult / StudyResult items (with their datapoint
    values by name in `.values`), or call `to_dataframe()` when pandas is installed.
    """

    def __init__(
        self,
        transport: Transport,
        project_id: int,
        query: str,
        *,
        target: Target = "patients",
        include_values: bool = True,
        page_size: int = MAX_PAGE,
    ) -> None:
        self._t = transport
        self.project_id = project_id
        self.query = query
        self.target = target
        self.include_values = include_values
        self.page_size = page_size
        self.total: int | None = None  # known once the first page is read

    def pages(self) -> Iterator[SearchResponse]:
        after: int | None = None
        while True:
            body = {
                "query": self.query,
                "target": self.target,
                "limit": self.page_size,
                "after": after,
                "include_values": self.include_values,
            }
            response = self._t.request(
                "POST", f"/projects/{self.project_id}/search", json=body, idempotent=True
            )
            page = SearchResponse.model_validate(response.json())
            self.total = page.total
            yield page
            if page.next_after is None:
                return
            after = page.next_after

    def __iter__(self) -> Iterator[PatientResult | StudyResult]:
        for page in self.pages():
            yield from page.results

    def to_dataframe(self) -> Any:
        """A pandas DataFrame: one row per match, the built-in fields, then one column per datapoint."""
        try:
            pandas = importlib.import_module("pandas")
        except ImportError as exc:
            raise IpacsClientError("to_dataframe() needs pandas: pip install pandas") from exc
        records: list[dict[str, Any]] = []
        for item in self:
            record = item.model_dump(exclude={"values", "creator"})
            record.update(item.values or {})
            records.append(record)
        return pandas.DataFrame.from_records(records)


def download_csv(
    transport: Transport, project_id: int, query: str, dest: Path | IO[bytes], target: Target = "patients"
) -> int:
    """The server's CSV export of every match (all columns and datapoints), streamed to a file."""
    body = {"query": query, "target": target}
    written = 0
    with transport.stream(
        "POST", f"/projects/{project_id}/search", json=body, headers={"Accept": "text/csv"}, idempotent=True
    ) as response:
        out = dest.open("wb") if isinstance(dest, Path) else dest
        try:
            for chunk in response.iter_bytes(1 << 16):
                out.write(chunk)
                written += len(chunk)
        finally:
            if isinstance(dest, Path):
                out.close()
    return written
