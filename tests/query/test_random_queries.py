"""Random queries over random data: the database's answer equals the reference evaluator's.

Values and literals come from small shared pools so that equalities, ranges
and substrings do hit; strings mix quotes, LIKE wildcards and non-ASCII
letters (lower-case only: SQLite folds ASCII letters only, see the docs).
Deterministic (derandomized) and bounded, so it runs in seconds.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipacs.db.engine import Database
from tests.query.reference import (
    DATAPOINT_TYPES,
    PATIENT_ATTRIBUTES,
    STUDY_ATTRIBUTES,
    T0,
    PatientRow,
    StudyRow,
    load,
)

INTEGERS = [-2, 0, 1, 3]
DECIMALS = [-1.5, 0.0, 0.1, 2.25]
STRINGS = st.text(alphabet="aBz%_/' é東", max_size=3)
DATES = ["2024-01-01", "2024-01-02", "2024-12-31"]
# The first and third are one instant; the second is half a second later.
DATETIMES = [
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00.5Z",
    "2024-01-01T02:00:00+02:00",
    "2024-06-01T12:00:00Z",
]
MOMENTS = [T0, T0 + timedelta(seconds=1), T0 + timedelta(days=1)]
MODALITIES = ["CT", "MR", "ct", "PT"]

T = TypeVar("T")


def maybe(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.one_of(st.none(), strategy)


@st.composite
def datapoint_values(draw: st.DrawFn) -> dict[str, object]:
    pools: dict[str, st.SearchStrategy[Any]] = {
        "age": st.sampled_from(INTEGERS),
        "weight": st.sampled_from([*DECIMALS, 1]),
        "responder": st.booleans(),
        "arm": st.sampled_from(["A", "B", "C"]),
        "note": STRINGS,
        "visit_date": st.sampled_from(DATES),
        "seen_at": st.sampled_from(DATETIMES),
    }
    values = {name: draw(maybe(pool)) for name, pool in pools.items()}
    return {name: value for name, value in values.items() if value is not None}


@st.composite
def studies(draw: st.DrawFn, patient: str) -> list[StudyRow]:
    count = draw(st.integers(0, 3))
    return [
        StudyRow(
            f"{patient}.{i}",
            modalities="\\".join(draw(st.lists(st.sampled_from(MODALITIES), max_size=2))),
            study_date=draw(maybe(st.sampled_from(DATES).map(date.fromisoformat))),
            study_time=draw(maybe(st.just("0930"))),
            accession_number=draw(maybe(STRINGS)),
            description=draw(maybe(STRINGS)),
            visit=draw(maybe(st.sampled_from(["Baseline", "Week 12"]))),
            status=draw(maybe(st.just("done"))),
            series_count=draw(st.sampled_from([0, 1, 3])),
            instance_count=draw(st.sampled_from([0, 1, 3])),
            size_bytes=draw(st.sampled_from([0, 1, 3])),
            created_at=draw(st.sampled_from(MOMENTS)),
        )
        for i in range(count)
    ]


@st.composite
def patients(draw: st.DrawFn) -> list[PatientRow]:
    rows = []
    for i in range(draw(st.integers(0, 6))):
        patient_id = f"P{i}"
        rows.append(
            PatientRow(
                patient_id,
                patient_name=draw(maybe(STRINGS)),
                birth_date=draw(maybe(st.sampled_from(DATES).map(date.fromisoformat))),
                sex=draw(maybe(st.sampled_from(["M", "F", "O"]))),
                created_at=draw(st.sampled_from(MOMENTS)),
                updated_at=draw(st.sampled_from(MOMENTS)),
                values=draw(datapoint_values()),
                studies=draw(studies(patient_id)),
            )
        )
    return rows


FIELDS = (
    [(name, kind) for name, kind in DATAPOINT_TYPES.items()]
    + [(f"patient.{name}", kind) for name, kind in PATIENT_ATTRIBUTES.items()]
    + [(f"study.{name}", kind) for name, kind in STUDY_ATTRIBUTES.items()]
)
CHOICES = {"arm": ["A", "B", "C"], "patient.sex": ["M", "F", "O"]}
ORDERED = {"integer", "decimal", "date", "datetime"}
TEXT_LIKE = {"string", "choice", "modalities"}


@st.composite
def literal(draw: st.DrawFn, name: str, kind: str) -> str:
    match kind:
        case "integer":
            return str(draw(st.sampled_from([*INTEGERS, 2])))
        case "decimal":
            return str(draw(st.sampled_from([*DECIMALS, 1, -2])))
        case "boolean":
            return draw(st.sampled_from(["true", "false", "TRUE", "False"]))
        case "choice":
            return quoted(draw, draw(st.sampled_from(CHOICES[name])))
        case "date":
            return quoted(draw, draw(st.sampled_from(DATES)))
        case "datetime":
            moments = [m.isoformat() for m in MOMENTS]
            return quoted(draw, draw(st.sampled_from(DATETIMES + moments)))
        case "modalities":
            return quoted(draw, draw(st.sampled_from([*MODALITIES, "Mr", "X"])))
        case _:
            return quoted(draw, draw(st.one_of(STRINGS, st.sampled_from(["0930", "Baseline", "P1", "done"]))))


def quoted(draw: st.DrawFn, text: str) -> str:
    quote = draw(st.sampled_from(["'", '"']))
    return quote + text.replace(quote, quote * 2) + quote


@st.composite
def conditions(draw: st.DrawFn, fields: list[tuple[str, str]] = FIELDS) -> str:
    name, kind = draw(st.sampled_from(fields))
    written = draw(st.sampled_from([name, name.upper()]))
    ops = ["=", "!=", "IN", "IS NULL", "is not null"]
    ops += ["<", "<=", ">", ">="] if kind in ORDERED else []
    ops += ["CONTAINS", "contains"] if kind in TEXT_LIKE else []
    op = draw(st.sampled_from(ops))
    if op.upper() in ("IS NULL", "IS NOT NULL"):
        return f"{written} {op}"
    if op.upper() == "CONTAINS":
        needle = draw(st.one_of(STRINGS, st.sampled_from(["t", "ASE", "do"])))
        return f"{written} {op} {quoted(draw, needle)}"
    if op == "IN":
        items = draw(st.lists(literal(name, kind), min_size=1, max_size=3))
        return f"{written} IN ({', '.join(items)})"
    return f"{written} {op} {draw(literal(name, kind))}"


def combined(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    keyword = st.sampled_from(["AND", "and", "OR", "or"])
    return st.one_of(
        st.tuples(children, keyword, children).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        children.map(lambda c: f"({c})"),
        children.map(lambda c: f"NOT {c}"),
    )


STUDY_FIELDS = [(name, kind) for name, kind in FIELDS if name.startswith("study.")]
# Study conditions side by side are where "the same study" matters: draw them often.
STUDY_PAIRS = st.tuples(
    conditions(STUDY_FIELDS), st.sampled_from(["AND", "OR"]), conditions(STUDY_FIELDS)
).map(lambda t: f"{t[0]} {t[1]} {t[2]}")
QUERIES = st.one_of(st.recursive(conditions(), combined, max_leaves=6), STUDY_PAIRS)


@settings(
    max_examples=120,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(rows=patients(), queries=st.lists(QUERIES, min_size=1, max_size=4))
def test_random_queries_match_the_reference(
    database: Database, rows: list[PatientRow], queries: list[str]
) -> None:
    with database.session(write=True) as session:
        try:
            loaded = load(session, rows)
            for query in queries:
                assert loaded.db_patients(query) == loaded.expected_patients(query), query
                assert loaded.db_studies(query) == loaded.expected_studies(query), query
        finally:
            session.rollback()
