"""A search runs in one of several shapes (see repository.plan_statements): driven by one
membership, walking every subject with probes, or everything as IN. Every shape must
answer exactly what the reference evaluator does."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from ipacs.auth.caller import Caller
from ipacs.config import Settings
from ipacs.db.engine import Database
from ipacs.models import Patient, Study, User
from ipacs.query import QuerySchema
from ipacs.query.compiler import CompiledQuery, Driver
from ipacs.search import repository, service
from tests.query.reference import Loaded, PatientRow, load
from tests.query.test_random_queries import QUERIES, conditions, patients
from tests.search.world import SearchWorld, found_ids, make_search_world, search


def _drivers(compiled: CompiledQuery) -> list[Driver]:
    return ["all", None, *range(len(compiled.memberships))]


def _patients(loaded: Loaded, compiled: CompiledQuery, driver: Driver) -> set[str]:
    query = select(Patient.patient_id).where(Patient.project_id == loaded.project_id, compiled.where(driver))
    return set(loaded.session.scalars(query))


def _studies(loaded: Loaded, compiled: CompiledQuery, driver: Driver) -> set[str]:
    query = (
        select(Study.study_instance_uid)
        .join(Patient, Patient.id == Study.patient_id)
        .where(Patient.project_id == loaded.project_id, compiled.where(driver))
    )
    return set(loaded.session.scalars(query))


# Conjunctions are where the shapes differ: several memberships, one of which drives.
CONJUNCTIONS = st.lists(st.one_of(conditions(), QUERIES.map(lambda q: f"({q})")), min_size=2, max_size=4).map(
    lambda parts: " AND ".join(parts)
)


@settings(
    max_examples=80,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(rows=patients(), queries=st.lists(st.one_of(CONJUNCTIONS, QUERIES), min_size=1, max_size=4))
def test_every_shape_matches_the_reference(
    database: Database, rows: list[PatientRow], queries: list[str]
) -> None:
    with database.session(write=True) as session:
        try:
            loaded = load(session, rows)
            for query in queries:
                want_patients = loaded.expected_patients(query)
                want_studies = loaded.expected_studies(query)
                for_patients = CompiledQuery(query, loaded.schema, "patients")
                for_studies = CompiledQuery(query, loaded.schema, "studies")
                for driver in _drivers(for_patients):
                    assert _patients(loaded, for_patients, driver) == want_patients, (query, driver)
                for driver in _drivers(for_studies):
                    assert _studies(loaded, for_studies, driver) == want_studies, (query, driver)
        finally:
            session.rollback()


def test_memberships_are_the_conjuncts_only() -> None:
    from types import SimpleNamespace

    schema = QuerySchema(
        [
            SimpleNamespace(id=1, name="age", type="integer", choices=None),
            SimpleNamespace(id=2, name="arm", type="choice", choices=["A", "B"]),
        ]
    )

    def count(query: str) -> int:
        return len(CompiledQuery(query, schema, "patients").memberships)

    assert count("age > 1") == 1
    assert count("age > 1 AND age < 5") == 1  # one datapoint, one subquery
    assert count("age > 1 AND arm = 'A' AND study.visit = 'x' AND study.status = 'y'") == 3
    assert count("age > 1 AND (arm = 'A' OR arm = 'B')") == 2
    assert count("age > 1 OR arm = 'A'") == 0
    assert count("NOT age > 1 AND arm IS NULL") == 0
    assert count("arm IS NOT NULL AND patient.sex = 'F'") == 1
    assert count("patient.sex = 'F'") == 0


# --- through the endpoint, with the driver cap moved ---------------------------


@pytest.fixture
def world(client: TestClient, db: Session, settings: Settings) -> SearchWorld:
    return make_search_world(client, db, settings)


QUERIES_TO_PLAN = [
    "",
    "age >= 0",
    "age >= 18 AND arm = 'A'",
    "arm = 'A' AND age >= 18 AND responder = true",
    "age > 20 AND NOT arm = 'A'",
    "age IS NOT NULL AND weight IS NULL",
    "study.modalities = 'MR' AND age > 20",
    "study.modalities = 'CT' AND study.visit = 'Baseline' AND arm = 'A'",
    "(age < 20 OR age > 60) AND arm IN ('A', 'B', 'placebo')",
    "arm = 'A' OR responder = false",
    "patient.patient_id != 'T1' AND age < 40",
]


def _pages(
    client: TestClient, project_id: int, who: str, query: str, **body: Any
) -> tuple[list[int], set[int]]:
    ids: list[int] = []
    totals = set()
    after = None
    while True:
        page = search(client, project_id, who, query, limit=2, after=after, **body)
        assert page.status_code == 200, page.text
        ids += found_ids(page)
        totals.add(page.json()["total"])
        after = page.json()["next_after"]
        if after is None:
            return ids, totals


def test_every_cap_gives_the_same_answers(
    client: TestClient, world: SearchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 0: nothing drives (pages walk, the total runs every test as IN); 1..3: the scope or
    # small memberships drive, depending on the query; a million: the smallest drives.
    answers: dict[tuple[str, str, str, int], tuple[list[int], set[int], str]] = {}
    for cap in (10**6, 0, 1, 2, 3):
        monkeypatch.setattr(repository, "DRIVER_CAP", cap)
        for query in QUERIES_TO_PLAN:
            for target in ("patients", "studies"):
                for who, project in (("viewer", world.trial), ("site_viewer", world.projects["site_a"])):
                    ids, totals = _pages(client, project, who, query, target=target)
                    assert totals == {len(ids)} and len(set(ids)) == len(ids), (cap, query, target, who)
                    csv = search(
                        client, project, who, query, headers={"Accept": "text/csv"}, target=target
                    ).text
                    key = (query, target, who, project)
                    if key in answers:
                        assert (ids, totals, csv) == answers[key], (cap, key)
                    else:
                        answers[key] = (ids, totals, csv)


def test_the_smallest_membership_drives(database: Database, world: SearchWorld) -> None:
    with database.session() as session:
        admin = session.scalars(select(User).where(User.username == "admin")).one()
        found = service.plan(
            session, Caller.from_user(admin), world.trial, "age >= 0 AND arm = 'B'", "patients"
        )
    sql = str(found.statements.page.compile(database.engine, compile_kwargs={"literal_binds": True}))
    # arm = 'B' (one value) drives, looked up once; age >= 0 (six values) is probed for each
    # of its patients, inside it, before any patient is read.
    driver = "patients.id IN (SELECT" if database.is_sqlite else "patients.id = ANY(ARRAY(SELECT"
    start = sql.index(driver)
    inside = sql[start:]
    assert "text_value" in inside[: inside.index("EXISTS")]
    probe = inside[inside.index("EXISTS") :]
    assert "num_value >=" in probe and "patient_id = datapoint_values_1.patient_id" in probe
    assert sql.count("EXISTS") == 1
    assert found.statements.page is found.statements.full
