"""No endpoint issues one query per row: the SQL statement count of a request
does not grow with the page size or with how many studies and values a patient has.

Statements are counted with a `before_cursor_execute` listener on the app's
engine; each request is made once to warm caches (credentials, session) and
then counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.datapoints import value_service
from ipacs.db.engine import Database
from ipacs.models import Datapoint, Patient, Project, User
from ipacs.patients import service as patient_service
from ipacs.patients.schemas import PatientEmpty
from ipacs.studies import service as study_service
from ipacs.studies.schemas import StudyCreate
from tests.factories import as_caller
from tests.patients.world import World, call, define, make_world, ok

DEFINITIONS = {
    "age": ("integer", 40),
    "weight": ("decimal", 71.5),
    "smoker": ("boolean", False),
    "arm": ("choice", "A"),
    "enrolled": ("date", "2024-01-15"),
    "seen_at": ("datetime", "2024-01-15T10:00:00Z"),
    "note": ("string", "ok"),
}


@dataclass
class Counter:
    statements: list[str]

    @property
    def count(self) -> int:
        return len(self.statements)


@contextmanager
def counting(database: Database) -> Iterator[Counter]:
    counter = Counter([])

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        counter.statements.append(statement)

    event.listen(database.engine, "before_cursor_execute", count)
    try:
        yield counter
    finally:
        event.remove(database.engine, "before_cursor_execute", count)


def statements_for(client: TestClient, database: Database, path: str) -> Counter:
    ok(call(client, "GET", path, "viewer"))  # warm up: credentials and session cached
    with counting(database) as counter:
        ok(call(client, "GET", path, "viewer"))
    return counter


@pytest.fixture
def world(client: TestClient, db: Session, settings: Settings) -> World:
    world = make_world(db, settings)
    for name, (dp_type, _) in DEFINITIONS.items():
        extra = {"choices": ["A", "B"]} if dp_type == "choice" else {}
        define(client, world.trial, name, dp_type, **extra)
    return world


def _patients(db: Session, project_id: int, count: int, *, values: int, studies: int) -> list[Patient]:
    """Patients made through the services (as the API would), each with values and studies."""
    project = db.get(Project, project_id)
    assert project is not None
    admin = as_caller(db.scalars(select(User).where(User.username == "admin")).one())
    definitions = list(db.scalars(select(Datapoint).order_by(Datapoint.id).limit(values)))
    made = []
    for i in range(count):
        patient = patient_service.register_patient(db, admin, project, PatientEmpty(patient_id=f"P{i:04d}"))
        for datapoint in definitions:
            raw = DEFINITIONS[datapoint.name][1]
            value_service.write_value(db, admin, patient, datapoint, raw, None)
        for _ in range(studies):
            study_service.register_study(db, admin, patient, StudyCreate(visit="Baseline", modalities=["CT"]))
        made.append(patient)
    db.commit()
    return made


def test_patient_list_page_of_100_costs_what_a_page_of_10_does(
    client: TestClient, world: World, db: Session, database: Database
) -> None:
    _patients(db, world.trial, 120, values=len(DEFINITIONS), studies=1)
    base = f"/projects/{world.trial}/patients"
    small = statements_for(client, database, base + "?limit=10")
    large = statements_for(client, database, base + "?limit=100")
    assert len(ok(call(client, "GET", base + "?limit=100", "viewer"))) == 100
    assert large.count == small.count, (small.statements, large.statements)
    # Also with the other list options that join or filter.
    for options in ("&recursive=true", "&search=p0", "&sort=-patient_id", "&offset=5"):
        small = statements_for(client, database, base + "?limit=10" + options)
        large = statements_for(client, database, base + "?limit=100" + options)
        assert large.count == small.count, options
    # A fixed, small number: auth, the role check, the count and the page
    # (plus SQLite's explicit BEGINs).
    assert large.count <= 12, large.statements


def test_values_list_costs_the_same_with_1_or_7_values(
    client: TestClient, world: World, db: Session, database: Database
) -> None:
    few, many = (
        _patients(db, world.trial, 1, values=1, studies=0)[0],
        _patients(db, world.site, 1, values=len(DEFINITIONS), studies=0)[0],
    )
    counts = []
    for patient in (few, many):
        path = f"/projects/{world.trial}/patients/{patient.id}/datapoints"
        values = ok(call(client, "GET", path, "viewer"))
        assert len(values) == len(DEFINITIONS)
        counts.append(statements_for(client, database, path))
    assert sum(v["value"] is not None for v in ok(call(client, "GET", path, "viewer"))) == len(DEFINITIONS)
    assert counts[0].count == counts[1].count, (counts[0].statements, counts[1].statements)
    assert counts[1].count <= 12, counts[1].statements


def test_patient_detail_costs_the_same_with_1_or_many_studies_and_values(
    client: TestClient, world: World, db: Session, database: Database
) -> None:
    few = _patients(db, world.trial, 1, values=1, studies=1)[0]
    many = _patients(db, world.site, 1, values=len(DEFINITIONS), studies=8)[0]
    counts = []
    for patient in (few, many):
        counts.append(statements_for(client, database, f"/patients/{patient.uuid}"))
    detail = ok(call(client, "GET", f"/patients/{many.uuid}", "viewer"))
    assert len(detail["studies"]) == 8 and len(detail["datapoint_values"]) == len(DEFINITIONS)
    assert all(s["creator"]["username"] == "admin" for s in detail["studies"])
    assert counts[0].count == counts[1].count, (counts[0].statements, counts[1].statements)
    assert counts[1].count <= 14, counts[1].statements


def test_studies_list_costs_the_same_for_1_or_50_studies(
    client: TestClient, world: World, db: Session, database: Database
) -> None:
    few = _patients(db, world.trial, 1, values=0, studies=1)[0]
    many = _patients(db, world.site, 1, values=0, studies=50)[0]
    paths = [f"/projects/{world.trial}/patients/{p.id}/studies" for p in (few, many)]
    counts = [statements_for(client, database, path) for path in paths]
    assert len(ok(call(client, "GET", paths[1], "viewer"))) == 50
    assert counts[0].count == counts[1].count, (counts[0].statements, counts[1].statements)
