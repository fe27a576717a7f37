"""POST /projects/{id}/search with `Accept: text/csv`: exact header and rows, and streaming."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Date, Float, Row, String, Uuid, literal, select
from sqlalchemy.orm import Session

from ipacs.auth.caller import Caller
from ipacs.config import Settings
from ipacs.datapoints import values as typing_
from ipacs.datapoints.value_service import shown
from ipacs.db.base import UTCDateTime
from ipacs.db.engine import Database
from ipacs.models import User
from ipacs.search import export, repository, service
from tests.conftest import FakeClock
from tests.factories import basic
from tests.patients.world import API, call, define, error, ok
from tests.search.world import INJECTION_ID, SearchWorld, make_search_world, search

NOW = "2026-01-01T12:00:00Z"  # the fake clock: every created_at and updated_at
DATAPOINT_COLUMNS = "age,weight,responder,arm,note,enrolled,seen_at,site_code"
CSV = {"Accept": "text/csv"}


@pytest.fixture
def world(client: TestClient, db: Session, settings: Settings, fake_clock: FakeClock) -> SearchWorld:
    return make_search_world(client, db, settings)


def _export(client: TestClient, project_id: int, query: str = "", who: str = "viewer", **body: Any) -> str:
    r = search(client, project_id, who, query, headers=CSV, **body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    return r.text


def _patient_row(world: SearchWorld, key: str, values: str) -> str:
    project, patient_id = key.split("/", 1)
    p = world.patients[(project, patient_id)]
    builtin = [
        str(p["id"]),
        p["uuid"],
        str(p["project_id"]),
        p["patient_id"],
        p["patient_name"] or "",
        p["birth_date"] or "",
        p["sex"] or "",
        NOW,
        NOW,
    ]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(builtin)
    return out.getvalue().rstrip("\n") + "," + values


def test_patients_header_and_rows_are_exact(client: TestClient, world: SearchWorld) -> None:
    r = search(client, world.trial, "viewer", "", headers=CSV)
    assert r.headers["content-disposition"] == f'attachment; filename="project-{world.trial}-patients.csv"'
    lines = r.text.split("\n")
    assert lines[0] == (
        "id,uuid,project_id,patient_id,patient_name,birth_date,sex,created_at,updated_at," + DATAPOINT_COLUMNS
    )
    assert lines[1:] == [
        _patient_row(
            world,
            "trial/T1",
            "40,70.5,true,A,it's 50% done,2024-01-15,2024-01-15T08:30:00Z,",
        ),
        # A decimal written as 80 is exported as the double it is; quotes are CSV-quoted.
        _patient_row(world, "trial/T2", "17,80.0,false,B,x' OR 1=1 --,,,"),
        _patient_row(world, "trial/T3", ",,,,,,,"),
        _patient_row(world, "site_a/A1", "65,,,placebo,,,,S001"),
        _patient_row(world, "site_a/A2", '30,,true,A,"said ""hi"", left",,,'),
        _patient_row(world, "site_b/B1", "50,99.25,,A,,,,"),
        _patient_row(world, f"site_b/{INJECTION_ID}", "22,,,,,,,"),
        "",  # the last line ends with a newline
    ]
    # The same rows parse back as CSV, one per patient, each as wide as the header.
    rows = list(csv.reader(io.StringIO(r.text)))
    assert len(rows) == 8 and {len(row) for row in rows} == {17}
    assert rows[1][:4] == [
        str(world.pk("trial", "T1")),
        world.patients[("trial", "T1")]["uuid"],
        str(world.trial),
        "T1",
    ]


def test_the_export_follows_the_query_and_the_scope(client: TestClient, world: SearchWorld) -> None:
    text = _export(client, world.trial, "arm = 'A' AND age < 45")
    assert [row[3] for row in csv.reader(io.StringIO(text))][1:] == ["T1", "A2"]
    # A subproject's export has the inherited datapoints and its own, and its patients only.
    text = _export(client, world.projects["site_a"], "", "site_viewer")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][9:] == DATAPOINT_COLUMNS.split(",")
    assert [row[3] for row in rows[1:]] == ["A1", "A2"]
    # Site B's export does not name Site A's datapoint.
    text = _export(client, world.projects["site_b"])
    assert text.split("\n")[0].endswith(",seen_at")
    # Nothing matches: the header alone.
    assert _export(client, world.trial, "age > 1000").count("\n") == 1
    # `limit` and `after` do not cut an export short.
    assert _export(client, world.trial, "", limit=1, after=0).count("\n") == 8


def test_studies_header_and_rows_are_exact(client: TestClient, world: SearchWorld) -> None:
    text = _export(client, world.trial, "study.modalities = 'MR'", target="studies")
    found = ok(search(client, world.trial, "viewer", "study.modalities = 'MR'", target="studies"))["results"]
    assert len(found) == 3
    lines = text.split("\n")
    assert lines[0] == (
        "id,uuid,study_instance_uid,patient_pk,patient_id,project_id,accession_number,study_date,study_time,"
        "description,modalities,visit,status,series_count,instance_count,size_bytes,created_at,updated_at,"
        + DATAPOINT_COLUMNS
    )
    t1 = world.pk("trial", "T1")
    a1 = world.pk("site_a", "A1")
    by_id = {s["id"]: s for s in found}
    baseline, week24, week12 = (by_id[world.studies[k]] for k in ("T1 baseline", "T1 week 24", "A1 week 12"))
    t1_values = "40,70.5,true,A,it's 50% done,2024-01-15,2024-01-15T08:30:00Z,"
    assert lines[1:] == [
        f"{baseline['id']},{baseline['uuid']},{baseline['study_instance_uid']},{t1},T1,{world.trial},,2024-02-01,,,"
        f"CT\\MR,Baseline,done,0,0,0,{NOW},{NOW},{t1_values}",
        f"{week24['id']},{week24['uuid']},{week24['study_instance_uid']},{t1},T1,{world.trial},,2024-08-01,,,"
        f"MR,Week 24,,0,0,0,{NOW},{NOW},{t1_values}",
        f"{week12['id']},{week12['uuid']},{week12['study_instance_uid']},{a1},A1,{world.projects['site_a']},,"
        f"2024-03-01,,,MR,Week 12,,0,0,0,{NOW},{NOW},65,,,placebo,,,,S001",
        "",
    ]
    r = search(client, world.trial, "viewer", "", headers=CSV, target="studies")
    assert r.headers["content-disposition"] == f'attachment; filename="project-{world.trial}-studies.csv"'


def test_a_name_defined_in_sibling_sites_is_one_column(client: TestClient, world: SearchWorld) -> None:
    # "grade" is a decimal in both sites; "score" an integer in Site A and a string in Site B.
    for site, score_type, score in (("site_a", "integer", 7), ("site_b", "string", "high, very")):
        define(client, world.projects[site], "grade", "decimal")
        define(client, world.projects[site], "score", score_type)
        patient = world.patients[(site, "A1" if site == "site_a" else "B1")]
        path = f"/projects/{world.projects[site]}/patients/{patient['id']}/datapoints"
        for name, value in (("grade", 2 if site == "site_a" else 3.5), ("score", score)):
            ok(call(client, "POST", path, "member", json={"datapoint_name": name, "value": value}), 201)
    rows = list(csv.reader(io.StringIO(_export(client, world.trial))))
    assert rows[0][-2:] == ["grade", "score"]
    cells = {row[3]: row[-2:] for row in rows[1:]}
    assert cells["A1"] == ["2.0", "7"] and cells["B1"] == ["3.5", "high, very"] and cells["T1"] == ["", ""]
    studies = list(csv.reader(io.StringIO(_export(client, world.trial, target="studies"))))
    assert {row[4]: row[-2:] for row in studies[1:]}["A1"] == ["2.0", "7"]


def test_csv_is_scoped_like_json(client: TestClient, world: SearchWorld) -> None:
    error(search(client, world.trial, "outsider", "", headers=CSV), 404, "not_found")
    error(search(client, world.trial, "site_viewer", "", headers=CSV), 404, "not_found")
    text = _export(client, world.projects["other"], "", "outsider")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][9:] == ["secret"] and [row[3] for row in rows[1:]] == ["T1", "O2"]
    assert [row[9] for row in rows[1:]] == ["top", "x"]


def test_json_is_the_default_and_csv_is_chosen_by_accept(client: TestClient, world: SearchWorld) -> None:
    for accept in ("application/json", "*/*"):
        r = search(client, world.trial, "viewer", "", headers={"Accept": accept})
        assert r.headers["content-type"] == "application/json" and ok(r)["total"] == 7
    r = search(client, world.trial, "viewer", "", headers={"Accept": "text/csv, application/json;q=0.5"})
    assert r.headers["content-type"].startswith("text/csv") and r.text.count("\n") == 8


# --- streaming ----------------------------------------------------------------


class BatchSpy:
    """Wraps repository.stream_rows: counts the batches read from the database and,
    after the first one, waits until the test has seen rows arrive (or gives up)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, hold: bool, size: int = 2) -> None:
        self.batches = 0
        self.rows_seen = threading.Event()
        self.gave_up = False
        self.hold = hold
        real = repository.stream_rows

        def spy(session: Session, stmt: Any, size: int) -> Iterator[Sequence[Row[Any]]]:
            for batch in real(session, stmt, size):
                if self.batches == 1 and self.hold and not self.rows_seen.wait(timeout=10):
                    self.gave_up = True
                self.batches += 1
                yield batch

        monkeypatch.setattr(repository, "stream_rows", spy)
        monkeypatch.setattr(export, "CSV_BATCH_SIZE", size)


def test_the_endpoint_streams_rows_before_the_query_is_read_to_the_end(
    client: TestClient, world: SearchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _export(client, world.trial)
    spy = BatchSpy(monkeypatch, hold=True)
    client.cookies.clear()
    received = b""
    batches_when_rows_arrived = None
    with client.stream(
        "POST", f"{API}/projects/{world.trial}/search", json={"query": ""}, headers={**basic("viewer"), **CSV}
    ) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            received += chunk
            if batches_when_rows_arrived is None and received.count(b"\n") >= 2:
                # Rows are here while the export still waits to read its second batch.
                batches_when_rows_arrived = spy.batches
                spy.rows_seen.set()
    assert not spy.gave_up, "the first rows did not arrive until the export had read everything"
    assert batches_when_rows_arrived == 1
    assert spy.batches == 4  # 7 patients, 2 at a time
    assert received.decode() == expected


def test_stream_csv_is_a_lazy_generator(
    client: TestClient, world: SearchWorld, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = BatchSpy(monkeypatch, hold=False, size=1)
    with database.session() as session:
        viewer = session.scalars(select(User).where(User.username == "viewer")).one()
        found = service.plan(session, Caller.from_user(viewer), world.trial, "age >= 0", "patients")
    chunks = export.stream_csv(database, found)
    header = next(chunks)
    assert header.decode().startswith("id,uuid,") and spy.batches == 0
    first = next(chunks)
    # Read ahead by one batch at most: the one written, one waiting, one being read.
    assert 1 <= spy.batches <= 3 and first.count(b"\n") == 1
    rest = list(chunks)
    assert spy.batches == 6 and len(rest) == 5  # 6 matches, 1 at a time
    assert b"".join([header, first, *rest]).decode() == _export(client, world.trial, "age >= 0")


def test_stream_csv_stops_reading_when_the_reader_stops(
    world: SearchWorld, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = BatchSpy(monkeypatch, hold=False, size=1)
    with database.session() as session:
        viewer = session.scalars(select(User).where(User.username == "viewer")).one()
        found = service.plan(session, Caller.from_user(viewer), world.trial, "age >= 0", "patients")
    chunks = export.stream_csv(database, found)
    next(chunks), next(chunks)
    chunks.close()  # a client that went away: the reading thread ends with the export
    assert spy.batches <= 3
    assert not [t for t in threading.enumerate() if t.name == "csv-export"]


def test_a_database_error_during_an_export_reaches_the_caller(
    world: SearchWorld, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(session: Session, stmt: Any, size: int) -> Iterator[Sequence[Row[Any]]]:
        yield from ()
        raise RuntimeError("the database went away")

    monkeypatch.setattr(repository, "stream_rows", failing)
    with database.session() as session:
        viewer = session.scalars(select(User).where(User.username == "viewer")).one()
        found = service.plan(session, Caller.from_user(viewer), world.trial, "", "patients")
    chunks = export.stream_csv(database, found)
    next(chunks)
    with pytest.raises(RuntimeError, match="went away"):
        next(chunks)


# --- value text from the sortable forms -----------------------------------------

RAW_VALUES = {
    "integer": st.integers(-(2**53), 2**53),
    "decimal": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53)),
    "boolean": st.booleans(),
    "date": st.dates().map(lambda d: d.isoformat()),
    # From year 1000: sortable_form writes years before it without their leading zero
    # (strftime's %Y), a fault of the stored form itself, reported separately.
    "datetime": st.datetimes(
        min_value=datetime(1000, 1, 1), timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])
    ).map(lambda m: m.isoformat()),
    # Without NUL, which request bodies may not hold (and PostgreSQL cannot store).
    "string": st.text(st.characters(exclude_characters="\x00"), max_size=50),
    "choice": st.sampled_from(["A", "b c", "é"]),
}


def _as_written(cell: Any) -> str:
    """A cell as the csv module writes it: floats by repr, the rest by str."""
    return repr(cell) if isinstance(cell, float) else str(cell)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(data=st.data())
def test_export_text_from_sortable_forms_is_the_canonical_text(
    database: Database, data: st.DataObject
) -> None:
    # The database writes each value's cell from (num_value, text_value), not from its
    # JSON form: the two must give the same text for every type, on every database.
    dp_type = data.draw(st.sampled_from(sorted(RAW_VALUES)))
    raw = data.draw(RAW_VALUES[dp_type])
    value = typing_.canonical(dp_type, raw)
    num, text = typing_.sortable_form(dp_type, value)
    stored = select(
        literal(num, Float).label("num_value"), literal(text, String).label("text_value")
    ).subquery()
    with database.session() as session:
        cell = session.scalar(select(export.value_cell(dp_type, stored.c.num_value, stored.c.text_value)))
    assert _as_written(cell) == typing_.text_form(dp_type, shown(dp_type, value))


@settings(max_examples=100, derandomize=True, database=None, deadline=None)
@given(
    key=st.uuids(),
    day=st.dates(min_value=date(1, 1, 1)),
    moment=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))])),
)
def test_builtin_cells_are_the_canonical_text(
    database: Database, key: UUID, day: date, moment: datetime
) -> None:
    # UUIDs, dates and datetimes are written by the database from their stored forms.
    cells = select(
        export.builtin_cell(literal(key, Uuid)),
        export.builtin_cell(literal(day, Date)),
        export.builtin_cell(literal(moment, UTCDateTime)),
    )
    with database.session() as session:
        row = session.execute(cells).one()
    assert tuple(row) == (
        str(key),
        day.isoformat(),
        moment.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    )
