"""CSV export of a search: one statement whose columns are the CSV's cells.

The database writes each cell: a built-in attribute in its canonical text, a
datapoint's value through one correlated subquery per datapoint column (an
index lookup by patient and datapoint), already in its canonical text, or as
an integer or a float that the csv module writes in that text (`str(int)`,
`repr(float)`). Python hands the driver's rows to `csv.writer` as they come:
no second query per batch, no conversion per cell. That per-cell work, and a
query per batch for the values, cost five to ten times what the rows
themselves did (profiled with cProfile on 100,000 patients; figures in
docs/performance.md).
"""

from __future__ import annotations

import csv
import io
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    Select,
    String,
    Uuid,
    case,
    cast,
    func,
    literal_column,
    true,
)
from sqlalchemy import select as select_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from ipacs.db.base import UTCDateTime
from ipacs.db.engine import Database
from ipacs.models import Datapoint, DatapointValue, Patient, Study
from ipacs.search import repository
from ipacs.search.repository import Target
from ipacs.search.service import SearchPlan

# The built-in columns of a CSV export, in order: (header, column). For studies,
# `patient_pk` is the patient's id and `patient_id` its PatientID.
PATIENT_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("id", Patient.id),
    ("uuid", Patient.uuid),
    ("project_id", Patient.project_id),
    ("patient_id", Patient.patient_id),
    ("patient_name", Patient.patient_name),
    ("birth_date", Patient.birth_date),
    ("sex", Patient.sex),
    ("created_at", Patient.created_at),
    ("updated_at", Patient.updated_at),
)
STUDY_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("id", Study.id),
    ("uuid", Study.uuid),
    ("study_instance_uid", Study.study_instance_uid),
    ("patient_pk", Study.patient_id),
    ("patient_id", Patient.patient_id),
    ("project_id", Study.project_id),
    ("accession_number", Study.accession_number),
    ("study_date", Study.study_date),
    ("study_time", Study.study_time),
    ("description", Study.description),
    ("modalities", Study.modalities),
    ("visit", Study.visit),
    ("status", Study.status),
    ("series_count", Study.series_count),
    ("instance_count", Study.instance_count),
    ("size_bytes", Study.size_bytes),
    ("created_at", Study.created_at),
    ("updated_at", Study.updated_at),
)
# Rows fetched (and written) at a time.
CSV_BATCH_SIZE = 5000


class CellText(ColumnElement[str]):
    """The canonical text of a UUID, date or datetime column, written by the database:
    `2f1c...-...` (lower case, with hyphens), `YYYY-MM-DD`, and UTC datetimes as
    `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` (a fraction only when there is one)."""

    inherit_cache = True
    type = String()
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("kind", InternalTraversal.dp_string),
    ]

    def __init__(self, column: Any, kind: str) -> None:
        self.column = column
        self.kind = kind


@compiles(CellText)
def _cell_text(element: CellText, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite, as SQLAlchemy stores these types: a UUID as 32 hex digits, a date as
    # YYYY-MM-DD, a datetime as "YYYY-MM-DD HH:MM:SS.ffffff" (in UTC: UTCDateTime).
    column = compiler.process(element.column, **kw)
    if element.kind == "uuid":
        parts = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
        return " || '-' || ".join(f"substr({column}, {start}, {length})" for start, length in parts)
    if element.kind == "datetime":
        return f"replace(replace({column}, ' ', 'T'), '.000000', '') || 'Z'"
    return column


@compiles(CellText, "postgresql")
def _cell_text_postgresql(element: CellText, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    if element.kind == "uuid":
        return f"CAST({column} AS TEXT)"
    if element.kind == "datetime":
        moment = f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
        return f"replace({moment}, '.000000', '') || 'Z'"
    return f"to_char({column}, 'YYYY-MM-DD')"


def builtin_cell(column: Any) -> ColumnElement[Any]:
    """A built-in attribute as its cell: numbers and strings as they are, the rest as text."""
    for column_type, kind in ((Uuid, "uuid"), (UTCDateTime, "datetime"), (Date, "date")):
        if isinstance(column.type, column_type):
            return CellText(column, kind)
    return column  # type: ignore[no-any-return]


def value_cell(dp_type: str, num: Any, text: Any) -> ColumnElement[Any]:
    """A value's cell from its sortable forms (`num`, `text`: num_value, text_value, or
    expressions of them), in the canonical text of its type (as datapoints.values.text_form
    writes it), or as a number the csv module writes so: an integer as an int, a decimal
    as the float it is (`80.0`, `70.5`). No value (NULL) stays NULL: an empty cell."""
    match dp_type:
        case "integer":
            return cast(num, BigInteger)
        case "decimal":
            return num  # type: ignore[no-any-return]
        case "boolean":
            return case((num == 0, literal_column("'false'")), (num != 0, literal_column("'true'")))
        case "datetime":
            # The sortable form always has six fraction digits; the canonical text has none
            # when they are all zero.
            return func.replace(text, literal_column("'.000000Z'"), literal_column("'Z'"))
    return text  # type: ignore[no-any-return]


def _value_groups(datapoints: list[Datapoint]) -> list[tuple[str, str, list[int]]]:
    """(name, type, datapoint ids): the datapoints that one subquery or aggregate reads.

    A patient has values only of the datapoints that apply in its project, and a name
    is unique in a lineage, so at most one of a column's datapoints has a value: a name
    defined with one type in several (sibling) projects is read at once, and a name
    defined with several types takes one read per type, of which at most one answers.
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for d in datapoints:
        groups.setdefault((d.name, d.type), []).append(d.id)
    return [(name, dp_type, ids) for (name, dp_type), ids in groups.items()]


def _which(column: Any, ids: list[int]) -> ColumnElement[bool]:
    return column == ids[0] if len(ids) == 1 else column.in_(ids)  # type: ignore[no-any-return]


def _with_value_subqueries(
    statement: Select[Any], groups: list[tuple[str, str, list[int]]], subject: Any
) -> Select[Any]:
    """One correlated subquery per group, each an index lookup by patient and datapoint."""
    columns = []
    for _, dp_type, ids in groups:
        value = aliased(DatapointValue)
        cell = value_cell(dp_type, value.num_value, value.text_value)
        rows = select_(cell).where(value.patient_id == subject, _which(value.datapoint_id, ids))
        columns.append((rows.limit(1) if len(ids) > 1 else rows).scalar_subquery())
    return statement.add_columns(*columns)


def _with_value_aggregate(
    statement: Select[Any], groups: list[tuple[str, str, list[int]]], subject: Any, left: Any
) -> Select[Any]:
    """Every value of the row's patient read at once, by one LATERAL subquery that
    aggregates them into one column per group (PostgreSQL): one index scan per row,
    where a subquery per value cost PostgreSQL nearly three times the CPU."""
    value = aliased(DatapointValue)
    cells = []
    for index, (_, dp_type, ids) in enumerate(groups):
        which = _which(value.datapoint_id, ids)
        num, text = func.max(value.num_value).filter(which), func.max(value.text_value).filter(which)
        cells.append(value_cell(dp_type, num, text).label(f"value_{index}"))
    values = select_(*cells).where(value.patient_id == subject).lateral("patient_values")
    return statement.add_columns(*values.c).join_from(left, values, true(), isouter=True)


def _builtin_columns(target: Target) -> tuple[tuple[str, Any], ...]:
    return PATIENT_COLUMNS if target == "patients" else STUDY_COLUMNS


def csv_header(target: Target, datapoints: list[Datapoint]) -> list[str]:
    """The built-in columns, then one column per datapoint name that applies."""
    builtin = [name for name, _ in _builtin_columns(target)]
    return [*builtin, *dict.fromkeys(d.name for d in datapoints)]


def export_statement(
    full: Select[Any], target: Target, datapoints: list[Datapoint], dialect: str
) -> tuple[Select[Any], Callable[[Sequence[Any]], Sequence[Any]] | None]:
    """The search's statement with the CSV's cells as its columns, and, when a name has
    several types, how to fold a row's cells for that name into one."""
    builtin = [builtin_cell(column) for _, column in _builtin_columns(target)]
    subject, left = (Patient.id, Patient) if target == "patients" else (Study.patient_id, Study)
    groups = _value_groups(datapoints)
    statement = full.with_only_columns(*builtin)
    if dialect == "postgresql":
        statement = _with_value_aggregate(statement, groups, subject, left)
    else:
        statement = _with_value_subqueries(statement, groups, subject)
    positions: dict[str, list[int]] = {}
    for index, (name, _, _) in enumerate(groups):
        positions.setdefault(name, []).append(len(builtin) + index)
    if len(positions) == len(groups):
        return statement, None
    first, folded = len(builtin), list(positions.values())

    def fold(row: Sequence[Any]) -> Sequence[Any]:
        return [*row[:first], *(next((row[i] for i in p if row[i] is not None), None) for p in folded)]

    return statement, fold


def stream_csv(database: Database, found: SearchPlan) -> Iterator[bytes]:
    """Every match as CSV, `CSV_BATCH_SIZE` rows at a time, from one statement (so from one
    snapshot of the database), in a read transaction of its own (the request's is over
    once the response starts)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_header(found.target, found.datapoints))
    yield buffer.getvalue().encode()
    statement, fold = export_statement(
        found.statements.full, found.target, found.datapoints, database.engine.dialect.name
    )
    for batch in _read_ahead(database, statement):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(batch if fold is None else map(fold, batch))
        yield buffer.getvalue().encode()


@dataclass(frozen=True)
class _Failed:
    error: Exception


_END = object()


def _read_ahead(database: Database, statement: Select[Any]) -> Iterator[Sequence[Any]]:
    """The statement's rows a batch at a time, read by a thread of its own one batch ahead:
    the database reads the next batch while the caller writes this one (SQLite and psycopg
    let go of the GIL while they work), so an export can keep two cores busy. At most
    three batches are held: the one written, one waiting, the one being read."""
    batches: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                batches.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the caller stopped reading

    def read() -> None:
        try:
            with database.session() as session:
                for batch in repository.stream_rows(session, statement, CSV_BATCH_SIZE):
                    if not put(batch):
                        return
        except Exception as error:  # handed over, and raised by the caller
            put(_Failed(error))
            return
        put(_END)

    reader = threading.Thread(target=read, name="csv-export", daemon=True)
    reader.start()
    try:
        while (item := batches.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        reader.join()  # the session is closed before the export ends
