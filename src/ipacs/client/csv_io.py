"""Datapoint values as CSV: one row per patient_id, one column per datapoint.

Import checks the whole file before anything is written: first its shape here
(header, columns, row lengths, repeated patients), then every cell on the
server with `dry_run` batches; every problem is reported with its line and
column. Only a clean file is written, in batches, each one atomic.

Cells are text; a cell is sent as the datapoint's JSON type when it reads as
one (`12` for an integer, `true` for a boolean) and as the text otherwise, so
that the server names the fault. An empty cell leaves the stored value alone.
Export writes the same form, so export -> import -> export is the identity.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipacs.client.errors import BadRequest, IpacsClientError
from ipacs.client.models import Datapoint, ImportSummaryOut
from ipacs.datapoints.values import text_form

PATIENT_COLUMN = "patient_id"
INTEGER = re.compile(r"[+-]?[0-9]+")
DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
BOOLEANS = {"true": True, "false": False}
SERVER_FIELD = re.compile(r"rows\[(\d+)\]\.(.+)")


@dataclass(frozen=True)
class CellError:
    """A problem in the file: `line` as an editor counts (the header is line 1), `column` from 1."""

    line: int
    column: int | None
    name: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column} ({self.name})" if self.column else "")
        return f"{where}: {self.message}"


class InvalidImportFile(IpacsClientError):
    """The file has errors; nothing was written. `errors` lists every one."""

    def __init__(self, path: Path, errors: list[CellError]) -> None:
        self.errors = errors
        super().__init__(f"{path}: {len(errors)} errors; nothing was written")


@dataclass
class ImportRow:
    line: int
    patient_id: str
    values: dict[str, Any]


@dataclass
class ImportFile:
    columns: list[str]
    rows: list[ImportRow] = field(default_factory=list)
    errors: list[CellError] = field(default_factory=list)


@dataclass
class ImportReport:
    rows: int = 0
    batches: int = 0
    patients_created: int = 0
    values_created: int = 0
    values_updated: int = 0
    values_unchanged: int = 0
    cells_empty: int = 0

    def add(self, summary: ImportSummaryOut) -> None:
        self.batches += 1
        self.rows += summary.rows
        self.patients_created += summary.patients_created
        self.values_created += summary.values_created
        self.values_updated += summary.values_updated
        self.values_unchanged += summary.values_unchanged
        self.cells_empty += summary.cells_empty


def cell_value(dp_type: str, text: str) -> Any:
    """A CSV cell as the datapoint's JSON type; text that does not read as one is sent as is."""
    if dp_type == "integer" and INTEGER.fullmatch(text.strip()):
        return int(text)
    if dp_type == "decimal":
        stripped = text.strip()
        if INTEGER.fullmatch(stripped):
            return int(stripped)
        if DECIMAL.fullmatch(stripped) and math.isfinite(float(stripped)):
            return float(stripped)
    if dp_type == "boolean" and text.strip().lower() in BOOLEANS:
        return BOOLEANS[text.strip().lower()]
    return text


def read_import_file(path: Path, datapoints: list[Datapoint]) -> ImportFile:
    """Parse and check the file's shape; cells are typed by their column's datapoint."""
    by_name = {d.name.lower(): d for d in datapoints}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return ImportFile([], errors=[CellError(1, None, "", "the file is empty")])
        parsed = ImportFile([h.strip() for h in header])
        _check_header(parsed, by_name)
        if parsed.errors and PATIENT_COLUMN not in parsed.columns:
            return parsed
        seen: dict[str, int] = {}
        line = reader.line_num
        for cells in reader:
            first_line, line = line + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue  # blank lines
            _read_row(parsed, by_name, first_line, cells, seen)
    return parsed


def _check_header(parsed: ImportFile, by_name: dict[str, Datapoint]) -> None:
    if PATIENT_COLUMN not in parsed.columns:
        parsed.errors.append(CellError(1, None, "", f"no {PATIENT_COLUMN!r} column in the header"))
    seen: set[str] = set()
    for index, name in enumerate(parsed.columns, start=1):
        if name.lower() in seen:
            parsed.errors.append(CellError(1, index, name, "the column appears twice"))
        seen.add(name.lower())
        if name != PATIENT_COLUMN and name.lower() not in by_name:
            parsed.errors.append(
                CellError(1, index, name, "no datapoint of this name applies in the project")
            )


def _read_row(
    parsed: ImportFile, by_name: dict[str, Datapoint], line: int, cells: list[str], seen: dict[str, int]
) -> None:
    if len(cells) != len(parsed.columns):
        parsed.errors.append(
            CellError(line, None, "", f"{len(cells)} cells where the header has {len(parsed.columns)}")
        )
        return
    values: dict[str, Any] = {}
    patient_id = ""
    for name, text in zip(parsed.columns, cells, strict=True):
        if name == PATIENT_COLUMN:
            patient_id = text.strip()
        elif text != "" and name.lower() in by_name:
            values[name] = cell_value(by_name[name.lower()].type, text)
    column = parsed.columns.index(PATIENT_COLUMN) + 1
    if not patient_id:
        parsed.errors.append(CellError(line, column, PATIENT_COLUMN, "empty patient_id"))
    elif patient_id in seen:
        parsed.errors.append(
            CellError(
                line,
                column,
                PATIENT_COLUMN,
                f"patient {patient_id!r} again (first on line {seen[patient_id]})",
            )
        )
    else:
        seen[patient_id] = line
        parsed.rows.append(ImportRow(line, patient_id, values))


def batches(rows: list[ImportRow], size: int) -> Iterator[list[ImportRow]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def server_errors(exc: BadRequest, batch: list[ImportRow], columns: list[str]) -> list[CellError]:
    """The server's `rows[i].name` details, as lines and columns of the file."""
    found: list[CellError] = []
    for detail in exc.details:
        match = SERVER_FIELD.fullmatch(detail.field or "")
        if match is None or int(match.group(1)) >= len(batch):
            found.append(CellError(batch[0].line if batch else 1, None, "", str(detail)))
            continue
        row, name = batch[int(match.group(1))], match.group(2)
        column = columns.index(name) + 1 if name in columns else None
        found.append(CellError(row.line, column, name, detail.message))
    return found


def import_file(
    send: Callable[[list[dict[str, Any]], bool], ImportSummaryOut],
    path: Path,
    datapoints: list[Datapoint],
    *,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Check the whole file (locally, then a dry run on the server), then write it batch by batch.

    `send(rows, dry_run)` makes one import request. Raises InvalidImportFile,
    listing every error, before anything is written.
    """
    parsed = read_import_file(path, datapoints)
    errors = list(parsed.errors)
    if PATIENT_COLUMN in parsed.columns:
        for batch in batches(parsed.rows, batch_size):
            try:
                send(_body(batch), True)
            except BadRequest as exc:
                errors.extend(server_errors(exc, batch, parsed.columns))
    if errors:
        raise InvalidImportFile(path, sorted(errors, key=lambda e: (e.line, e.column or 0)))
    report = ImportReport()
    for batch in batches(parsed.rows, batch_size):
        report.add(send(_body(batch), False))
        if progress is not None:
            progress(len(batch))
    return report


def _body(batch: list[ImportRow]) -> list[dict[str, Any]]:
    return [{"patient_id": r.patient_id, "values": r.values} for r in batch]


def write_export(path: Path, datapoints: list[Datapoint], rows: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Write patient_id and one column per datapoint, in the import's form. Returns the row count."""
    count = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([PATIENT_COLUMN, *(d.name for d in datapoints)])
        for patient_id, values in rows:
            writer.writerow([patient_id, *(text_form(d.type, values.get(d.name)) for d in datapoints)])
            count += 1
    return count
