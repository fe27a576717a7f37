"""Compiled queries against a real database, compared with the Python reference evaluator."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from ipacs.datapoints.values import typed_value
from ipacs.db.engine import Database
from ipacs.errors import InvalidQuery
from ipacs.models import Datapoint, DatapointValue, Patient, Study
from ipacs.query import QuerySchema, compile_query
from ipacs.query.schema import DatapointField
from tests.query.reference import Loaded, PatientRow, StudyRow, load

D = date.fromisoformat


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


PATIENTS = [
    PatientRow(
        "P1",
        patient_name="Ada Lovelace",
        birth_date=D("1960-05-01"),
        sex="F",
        created_at=at("2025-01-01T10:00:00"),
        values={
            "age": 40,
            "weight": 70.5,
            "responder": True,
            "arm": "A",
            "note": "50% done_ok",
            "visit_date": "2024-01-01",
            "seen_at": "2024-01-01T08:00:00Z",
        },
        studies=[
            StudyRow(
                "1.1",
                "CT\\MR",
                D("2024-02-01"),
                "0930",
                "ACC1",
                "Baseline 100%",
                "Baseline",
                "done",
                3,
                300,
                1000,
            ),
            StudyRow("1.2", "MR", D("2023-06-01"), visit="Week 12", status="pending", series_count=1),
        ],
    ),
    PatientRow(
        "P2",
        patient_name="bob o'hara",
        birth_date=D("1980-12-31"),
        sex="M",
        created_at=at("2025-06-01T00:00:00"),
        values={
            "age": 18,
            "weight": 80,
            "responder": False,
            "arm": "B",
            "note": "it's a/b",
            "visit_date": "2024-06-30",
        },
        studies=[
            StudyRow("2.1", "PT\\CT", D("2022-01-01"), description="under_score", status="done", size_bytes=5)
        ],
    ),
    PatientRow(
        "P3",
        sex="O",
        values={"age": 65, "arm": "C", "note": "Zoë 東京", "seen_at": "2024-06-01T10:00:00+02:00"},
        studies=[
            StudyRow("3.1", "", None, visit="Baseline"),
            StudyRow("3.2", "SR", D("2024-03-03"), status="done"),
        ],
    ),
    PatientRow("P4", patient_name="ÉTÉ", values={"weight": 0.1, "responder": True}),
    PatientRow("P5", birth_date=D("1950-01-01"), sex="F", values={"age": 0, "note": ""}),
    PatientRow(
        "P6",
        sex="M",
        values={"arm": "A", "note": "x; DROP TABLE patients; --", "age": -3},
        studies=[StudyRow("6.1", "ct", D("2024-02-01"), accession_number="ACC6", visit="baseline")],
    ),
]

# Every operator on every type, the missing-value rules, NOT, AND/OR and study grouping.
QUERIES = [
    # integer
    "age = 40",
    "age != 40",
    "age < 18",
    "age <= 18",
    "age > 18",
    "age >= 18",
    "age IN (0, 40, 99)",
    "age = 40.0",
    "age >= -3",
    "age IS NULL",
    "age IS NOT NULL",
    "NOT age = 40",
    "NOT age IS NULL",
    # decimal
    "weight = 70.5",
    "weight = 0.1",
    "weight > 70",
    "weight <= 80",
    "weight != 80",
    "weight IN (0.1, 80)",
    "weight < 1",
    # boolean
    "responder = true",
    "responder = FALSE",
    "responder != true",
    "responder IN (true, false)",
    "NOT responder = true",
    # choice
    "arm = 'A'",
    "arm != 'A'",
    "NOT arm = 'A'",
    "arm IN ('A', 'C')",
    "arm CONTAINS 'a'",
    "arm IS NULL",
    # string
    "note = 'it''s a/b'",
    'note = "it\'s a/b"',
    "note != ''",
    "note = ''",
    "note CONTAINS '50%'",
    "note CONTAINS '%'",
    "note CONTAINS '_'",
    "note CONTAINS 'done_'",
    "note CONTAINS '/'",
    "note CONTAINS 'A/B'",
    "note CONTAINS ''",
    "note CONTAINS 'zoë 東'",
    "note CONTAINS '; drop'",
    "note IN ('', 'x')",
    # date
    "visit_date = '2024-01-01'",
    "visit_date < '2024-06-30'",
    "visit_date >= '2024-01-02'",
    "visit_date IN ('2024-06-30', '2020-01-01')",
    "visit_date != '2024-01-01'",
    # datetime (offsets are converted to UTC)
    "seen_at = '2024-06-01T08:00:00Z'",
    "seen_at >= '2024-06-01T10:00:00+02:00'",
    "seen_at < '2024-06-01T08:00:00'",
    "seen_at > '2024-01-01T08:00:00.000001Z'",
    # patient attributes
    "patient.patient_id = 'P1'",
    "patient.patient_id IN ('P2', 'P3', 'nobody')",
    "patient.patient_id CONTAINS 'p'",
    "Patient.Patient_Name CONTAINS 'O''H'",
    "patient.patient_name != 'Ada Lovelace'",
    "NOT patient.patient_name = 'Ada Lovelace'",
    "patient.patient_name IS NULL",
    "patient.birth_date < '1970-01-01'",
    "patient.birth_date >= '1960-05-01'",
    "NOT patient.birth_date < '1970-01-01'",
    "patient.sex = 'F'",
    "patient.sex != 'F'",
    "NOT patient.sex = 'F'",
    "patient.sex IN ('M', 'O')",
    "patient.sex CONTAINS 'f'",
    "patient.sex IS NOT NULL",
    "patient.created_at >= '2025-01-01T10:00:00Z'",
    "patient.created_at < '2025-06-01T00:00:00Z'",
    "patient.created_at = '2025-06-01T02:00:00+02:00'",
    "patient.updated_at = '2026-01-01T12:00:00Z'",
    # study attributes
    "study.study_instance_uid = '1.2'",
    "study.accession_number IS NULL",
    "study.accession_number CONTAINS 'acc'",
    "study.description CONTAINS '100%'",
    "study.description CONTAINS '_'",
    "study.visit = 'Baseline'",
    "study.visit != 'Baseline'",
    "NOT study.visit = 'Baseline'",
    "study.status IN ('done')",
    "study.study_time = '0930'",
    "study.study_date >= '2024-01-01'",
    "study.study_date < '2024-01-01'",
    "study.study_date IS NULL",
    "study.study_date = '2024-02-01'",
    "study.modalities = 'CT'",
    "study.modalities = 'ct'",
    "study.modalities = 'C'",
    "study.modalities != 'CT'",
    "NOT study.modalities = 'CT'",
    "study.modalities IN ('PT', 'SR')",
    "study.modalities CONTAINS 'r'",
    "study.modalities CONTAINS 'T\\M'",
    "study.modalities CONTAINS ''",
    "study.modalities IS NULL",
    "study.modalities IS NOT NULL",
    "study.series_count > 2",
    "study.instance_count <= 0",
    "study.size_bytes = 5",
    "study.created_at = '2026-01-01T12:00:00Z'",
    # combinations
    "age >= 18 AND patient.sex = 'F'",
    "age < 18 OR arm = 'C'",
    "NOT (age < 18 OR arm = 'C')",
    "(arm = 'A' OR arm = 'B') AND NOT responder = true",
    "age >= 18 AND patient.sex = 'F' AND (arm IN ('A', 'B') OR NOT responder = true) "
    "AND study.study_date >= '2024-01-01'",
    "study.modalities = 'CT' AND study.study_date >= '2024-01-01'",
    "study.modalities = 'MR' AND study.visit = 'Week 12'",
    "study.modalities = 'CT' AND age > 0 AND study.visit = 'Week 12'",
    "study.modalities = 'SR' OR study.visit = 'Week 12'",
    "(study.modalities = 'CT' OR age = 65) AND study.status = 'done'",
    "study.modalities = 'CT' AND NOT study.status = 'pending'",
    "NOT (study.modalities = 'CT' AND study.study_date >= '2024-01-01')",
    "age IS NULL OR study.modalities IS NULL",
    "NOT NOT arm = 'A'",
    # conditions on one datapoint joined by AND share one subquery
    "visit_date >= '2024-01-01' AND visit_date < '2024-06-30'",
    "age > 0 AND age < 50 AND arm = 'A'",
    "age > 0 AND age IS NOT NULL AND NOT age = 18",
    "note CONTAINS 'a' AND note != 'it''s a/b' AND AGE >= 0",
    "age < 0 OR age > 50 AND age != 65",
    # ... and joined by OR too
    "age < 0 OR age > 50",
    "age < 0 OR age > 50 OR arm = 'B'",
    "(age < 0 OR age >= 65) AND arm IS NOT NULL",
    "NOT (age < 0 OR age >= 65)",
    "age = 40 OR arm = 'A' OR age = 18 OR arm IS NULL",
]


@pytest.fixture(scope="module")
def session(database: Database) -> Iterator[Session]:
    """One transaction for the module, rolled back at its end: the tests only read the dataset."""
    with database.session(write=True) as session:
        yield session
        session.rollback()


@pytest.fixture(scope="module")
def loaded(session: Session) -> Loaded:
    return load(session, PATIENTS)


@pytest.fixture
def db(session: Session, loaded: Loaded) -> Iterator[Session]:
    """The module's session, for a test that adds rows of its own: they are rolled back after it."""
    savepoint = session.begin_nested()
    yield session
    savepoint.rollback()


@pytest.mark.parametrize("query", QUERIES)
def test_matches_the_reference(loaded: Loaded, query: str) -> None:
    assert loaded.db_patients(query) == loaded.expected_patients(query)
    assert loaded.db_studies(query) == loaded.expected_studies(query)


# The reference evaluator itself, pinned on the rules the docs state.
STATED = [
    ("arm != 'A'", {"P2", "P3"}),  # patients without an arm value do not match !=
    ("NOT arm = 'A'", {"P2", "P3", "P4", "P5"}),  # ... but do match NOT =
    ("arm IS NULL", {"P4", "P5"}),
    ("patient.sex != 'F'", {"P2", "P3", "P6"}),
    ("NOT patient.sex = 'F'", {"P2", "P3", "P4", "P6"}),
    ("study.modalities = 'CT'", {"P1", "P2", "P6"}),  # any study; case-insensitive
    ("NOT study.modalities = 'CT'", {"P3", "P4", "P5"}),  # no CT study at all
    ("study.modalities != 'CT'", {"P1", "P3"}),  # a study with modalities, none CT
    ("study.modalities = 'CT' AND study.study_date >= '2024-01-01'", {"P1", "P6"}),  # the same study
    ("study.modalities = 'MR' AND study.study_date < '2024-01-01'", {"P1"}),
    ("study.modalities = 'CT' AND study.visit = 'Week 12'", set()),  # P1 has both, not in one study
    ("note CONTAINS '_'", {"P1"}),
    ("note CONTAINS '%'", {"P1"}),
    ("note CONTAINS ''", {"P1", "P2", "P3", "P5", "P6"}),
    ("weight > 70", {"P1", "P2"}),
    ("seen_at = '2024-06-01T08:00:00Z'", {"P3"}),
]


@pytest.mark.parametrize(("query", "expected"), STATED)
def test_stated_semantics(loaded: Loaded, query: str, expected: set[str]) -> None:
    assert loaded.expected_patients(query) == expected
    assert loaded.db_patients(query) == expected


def test_study_target_applies_patient_conditions_to_each_study(loaded: Loaded) -> None:
    query = "patient.sex = 'F' AND study.modalities = 'MR'"
    assert loaded.db_studies(query) == {"1.1", "1.2"}
    assert loaded.db_studies("age IS NULL") == set()
    assert loaded.db_studies("NOT study.study_date IS NOT NULL") == {"3.1"}


def test_sibling_datapoints_with_one_name_are_searched_together(db: Session, loaded: Loaded) -> None:
    # Two sibling projects may each define "arm"; a search over both means either.
    other = load(db, [PatientRow("Q1", values={"arm": "A"})])
    both = QuerySchema([*other_definitions(db, loaded.project_id), *other_definitions(db, other.project_id)])
    where = compile_query("arm = 'A'", both, "patients")
    found = set(db.scalars(select(Patient.patient_id).where(where)))
    assert found == {"P1", "P6", "Q1"}


def other_definitions(db: Session, project_id: int) -> list[Datapoint]:
    return list(db.scalars(select(Datapoint).where(Datapoint.project_id == project_id)))


INJECTIONS = [
    "note = 'x''; DROP TABLE patients; --'",
    "note = 'x; DROP TABLE patients; --'",
    'note = """; DELETE FROM patients; --"',
    "note CONTAINS ''' OR 1=1 --'",
    "patient.patient_id = 'P1'' OR ''1''=''1'",
    "note IN ('a'')--', ';', '\"')",
    "study.modalities = 'CT''--'",
    "study.description CONTAINS '%'' OR ''%''='''",
]


@pytest.mark.parametrize("query", INJECTIONS)
def test_injection_shaped_literals_are_only_data(loaded: Loaded, db: Session, query: str) -> None:
    assert loaded.db_patients(query) == loaded.expected_patients(query)
    assert loaded.db_studies(query) == loaded.expected_studies(query)
    assert db.scalar(select(func.count()).select_from(Patient)) == len(PATIENTS)


@pytest.mark.parametrize(
    "query",
    [
        "patients; DROP TABLE patients = 1",
        'note = "\\"; DELETE FROM patients; --"',
        "age = 1; DROP TABLE patients",
        "age = 1 -- comment",
        "note = 'a' /* comment */",
        "\"note\" = 'a'",
        "age) OR (1 = 1",
        "patient.id = 1",
        "study.patient_id = 1",
        "patient.__class__ = 'x'",
        "DatapointValue = 1",
    ],
)
def test_injection_shaped_names_are_rejected(loaded: Loaded, query: str) -> None:
    with pytest.raises(InvalidQuery):
        compile_query(query, loaded.schema, "patients")


def test_literals_are_bound_parameters(loaded: Loaded, db: Session) -> None:
    marker = "zz_marker_7f3"
    queries = [
        f"note = '{marker}'",
        f"note CONTAINS '{marker}'",
        f"arm IN ('A') OR patient.patient_name = '{marker}'",
        f"study.modalities = '{marker}'",
        f"study.modalities CONTAINS '{marker}' OR study.description != '{marker}'",
    ]
    for query in queries:
        for target in ("patients", "studies"):
            where = compile_query(query, loaded.schema, target)  # type: ignore[arg-type]
            sql = str(select(Patient.id).where(where).compile(db.get_bind()))
            assert marker not in sql, (query, sql)


TYPE_ERRORS = [
    ("age = 'x'", 6, "expected a whole number for age"),
    ("age = 1.5", 6, "expected a whole number for age"),
    ("age = true", 6, "expected a whole number for age"),
    ("age = 9007199254740993", 6, "integers are limited"),
    ("weight = '1'", 9, "expected a number for weight"),
    ("responder = 1", 12, "expected true or false for responder"),
    ("responder = 'true'", 12, "expected true or false for responder"),
    ("arm = 'D'", 6, "'D' is not one of the choices of arm: A, B, C"),
    ("arm IN ('A', 'a')", 13, "'a' is not one of the choices of arm: A, B, C"),
    ("arm = 1", 6, "expected one of the choices of arm: A, B, C"),
    ("note = 1", 7, "expected a 'string' for note"),
    ("visit_date = '2024-1-1'", 13, "expected a date 'YYYY-MM-DD'"),
    ("visit_date = '2024-02-30'", 13, "not a real date"),
    ("visit_date = 20240101", 13, "expected a date 'YYYY-MM-DD'"),
    ("seen_at >= '2024-01-01'", 11, "expected an ISO 8601 datetime"),
    ("patient.sex = 'X'", 14, "'X' is not one of the choices of patient.sex: M, F, O"),
    ("patient.birth_date > '01/02/1990'", 21, "expected a date 'YYYY-MM-DD'"),
    ("study.series_count = 'many'", 21, "expected a whole number for study.series_count"),
    ("study.modalities = 'CT\\MR'", 19, "expected a modality"),
    ("study.modalities = ''", 19, "expected a modality"),
    ("arm < 'B'", 4, "'<' needs an ordered field (integer, decimal, date or datetime); arm is a choice"),
    ("note >= 'a'", 5, "note is a string"),
    ("responder > false", 10, "responder is a boolean"),
    ("study.modalities < 'CT'", 17, "study.modalities is a list of modalities"),
    ("patient.patient_id <= 'P2'", 19, "'<=' needs an ordered field"),
    (
        "age CONTAINS '1'",
        4,
        "CONTAINS needs a text field (string, choice or study.modalities); age is an integer",
    ),
    ("visit_date CONTAINS '2024'", 11, "visit_date is a date"),
    ("agee = 1", 0, "unknown field 'agee'; did you mean age?"),
    ("sex = 'F'", 0, "did you mean patient.sex?"),
    ("AGE > 1 AND arms = 'A'", 12, "did you mean arm?"),
    ("study.date = '2024-01-01'", 0, "did you mean study.study_date"),
    ("patient.zzz = 1", 0, "expected one of patient.patient_id, patient.patient_name"),
    ("qqq = 1", 0, "expected a datapoint name, patient.<attribute> or study.<attribute>"),
    # the first fault in the text is the one reported
    ("age = 'x' AND arm = 'D'", 6, "expected a whole number"),
    ("study.visit = 1 AND age = 'x'", 14, "expected a 'string' for study.visit"),
    ("age = 1 AND (study.visit = 'a' AND nope = 1)", 35, "unknown field 'nope'"),
    ("(study.series_count = 'x' AND nope = 1)", 22, "expected a whole number"),
]


@pytest.mark.parametrize(("query", "position", "message"), TYPE_ERRORS)
def test_type_errors_point_at_the_fault(loaded: Loaded, query: str, position: int, message: str) -> None:
    for target in ("patients", "studies"):
        with pytest.raises(InvalidQuery) as caught:
            compile_query(query, loaded.schema, target)  # type: ignore[arg-type]
        assert caught.value.position == position
        assert message in caught.value.details[0]["message"]


def test_datapoint_names_match_case_insensitively(loaded: Loaded) -> None:
    assert loaded.db_patients("AGE = 40 and Arm = 'A'") == {"P1"}


def test_datapoints_of_different_types_under_one_name_are_refused_when_used(loaded: Loaded) -> None:
    from types import SimpleNamespace

    schema = QuerySchema(
        [
            SimpleNamespace(id=1, name="score", type="integer", choices=None),
            SimpleNamespace(id=2, name="Score", type="string", choices=None),
        ]
    )
    compile_query("patient.sex = 'F'", schema, "patients")
    with pytest.raises(InvalidQuery) as caught:
        compile_query("patient.sex = 'F' OR score = 1", schema, "patients")
    assert caught.value.position == 21
    assert "different types (integer, string)" in caught.value.details[0]["message"]


PLAN_CASES = [
    ("age >= 2990", "num_value"),
    ("age < 3 OR age > 2997", "num_value"),
    ("arm IN ('C')", "text_value"),
    ("visit_date >= '2028-01-01' AND visit_date < '2028-01-05'", "text_value"),
    ("age >= 2990 AND patient.sex IS NULL AND NOT arm = 'B'", "num_value"),
]


def load_many(db: Session, count: int = 3000) -> Loaded:
    """`count` patients with distinct ages and visit dates, a rare arm C, and fresh planner statistics."""
    loaded = load(db, [])
    db.execute(
        insert(Patient), [{"project_id": loaded.project_id, "patient_id": f"M{i}"} for i in range(count)]
    )
    rows = db.execute(select(Patient.patient_id, Patient.id).where(Patient.project_id == loaded.project_id))
    values = []
    for patient_id, row_id in rows:
        i = int(patient_id[1:])
        raw = {
            "age": i,
            "arm": "C" if i % 500 == 0 else "AB"[i % 2],
            "visit_date": (date(2020, 1, 1) + timedelta(days=i)).isoformat(),
        }
        for name, value in raw.items():
            field = loaded.schema.lookup(name)
            assert isinstance(field, DatapointField)
            typed = typed_value(field.type, value, choices=list(field.choices or []) or None)
            values.append(
                {
                    "datapoint_id": field.ids[0],
                    "patient_id": row_id,
                    "value": typed.value,
                    "num_value": typed.num,
                    "text_value": typed.text,
                }
            )
    db.execute(insert(DatapointValue), values)
    db.execute(text("ANALYZE patients"))
    db.execute(text("ANALYZE datapoint_values"))
    return loaded


def test_selective_datapoint_conditions_use_the_value_indexes(database: Database, db: Session) -> None:
    loaded = load_many(db)
    for query, column in PLAN_CASES:
        where = compile_query(query, loaded.schema, "patients")
        sql = str(
            select(Patient.id).where(where).compile(db.get_bind(), compile_kwargs={"literal_binds": True})
        )
        prefix = "EXPLAIN QUERY PLAN " if database.is_sqlite else "EXPLAIN "
        plan = [str(row[-1]) for row in db.execute(text(prefix + sql))]
        if database.is_sqlite:
            # Driven by a (datapoint_id, value) index, not a scan of every patient probing for a value.
            assert any("INDEX ix_datapoint_values_" in line and column in line for line in plan), (
                query,
                plan,
            )
            assert not any(line.startswith("SCAN patients") for line in plan), (query, plan)
        else:
            assert any("Index Cond" in line and column in line for line in plan), (query, plan)
            assert not any("Seq Scan" in line for line in plan), (query, plan)


def test_the_expression_composes_with_other_filters(loaded: Loaded, db: Session) -> None:
    where = compile_query("study.modalities = 'CT'", loaded.schema, "studies")
    query = (
        select(Study.study_instance_uid)
        .join(Patient, Patient.id == Study.patient_id)
        .where(where, Study.study_date >= date(2024, 1, 1))
    )
    assert set(db.scalars(query)) == {"1.1", "6.1"}
