"""A patient's datapoint values: the endpoints, typing, history and concurrent edits."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.db.engine import Database
from ipacs.models import DatapointValue, DatapointValueVersion
from tests.factories import basic
from tests.patients.world import (
    API,
    MISSING,
    World,
    call,
    define,
    error,
    fields_of,
    make_world,
    new_patient,
    ok,
)

DEFINITIONS: dict[str, dict[str, Any]] = {
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "count": {"type": "integer"},
    "weight": {"type": "decimal", "minimum": 0.5, "maximum": 500},
    "score": {"type": "decimal"},
    "visit_date": {"type": "date", "minimum": "2000-01-01", "maximum": "2030-12-31"},
    "seen_at": {"type": "datetime", "minimum": "2000-01-01T00:00:00Z"},
    "smoker": {"type": "boolean"},
    "arm": {"type": "choice", "choices": ["A", "B", "Placebo"]},
    "code": {"type": "string", "pattern": "^[A-Z]{3}[0-9]*$"},
    "note": {"type": "string"},
}


@dataclass(frozen=True)
class Setup:
    world: World
    ids: dict[str, int]  # datapoint name -> id
    patient: dict[str, Any]

    @property
    def base(self) -> str:
        return f"/projects/{self.world.trial}/patients/{self.patient['id']}/datapoints"


@pytest.fixture
def setup(client: TestClient, db: Session, settings: Settings) -> Setup:
    world = make_world(db, settings)
    ids = {}
    for name, spec in DEFINITIONS.items():
        fields = {k: v for k, v in spec.items() if k != "type"}
        ids[name] = define(client, world.trial, name, spec["type"], **fields)
    ids["site_score"] = define(client, world.site, "site_score", "decimal")
    ids["elsewhere"] = define(client, world.other, "elsewhere", "string")
    patient = new_patient(client, world.trial, "P1")
    return Setup(world, ids, patient)


def _post(client: TestClient, s: Setup, body: dict[str, Any], who: str = "member") -> Any:
    return call(client, "POST", s.base, who, json=body)


def _put(client: TestClient, s: Setup, name: str, value: Any, who: str = "member", **kwargs: Any) -> Any:
    return call(client, "PUT", f"{s.base}/{s.ids[name]}", who, json={"value": value}, **kwargs)


def _get(client: TestClient, s: Setup, name: str, who: str = "viewer") -> Any:
    return call(client, "GET", f"{s.base}/{s.ids[name]}", who)


# --- the endpoints ------------------------------------------------------------


def test_list_has_every_applicable_datapoint_with_value_or_null(client: TestClient, setup: Setup) -> None:
    s = setup
    ok(_post(client, s, {"datapoint_name": "age", "value": 42}), 201)
    listed = ok(call(client, "GET", s.base, "viewer"))
    # Trial's own definitions, in definition order; not the Site's (a child) or Other's.
    assert [v["datapoint_name"] for v in listed] == list(DEFINITIONS)
    by_name = {v["datapoint_name"]: v for v in listed}
    age = by_name["age"]
    assert (age["value"], age["version"], age["datapoint_id"], age["patient_id"]) == (
        42,
        1,
        s.ids["age"],
        s.patient["id"],
    )
    assert age["creator"]["username"] == age["updated_by"]["username"] == "member"
    assert age["id"] is not None and age["uuid"] is not None and age["created_at"] is not None
    unset = by_name["note"]
    assert (unset["value"], unset["id"], unset["version"], unset["creator"]) == (None, None, None, None)


def test_list_for_a_site_patient_includes_inherited_and_own_definitions(
    client: TestClient, setup: Setup
) -> None:
    s = setup
    in_site = new_patient(client, s.world.site, "S1")
    for route, who in ((s.world.site, "site_user"), (s.world.trial, "viewer")):
        listed = ok(call(client, "GET", f"/projects/{route}/patients/{in_site['id']}/datapoints", who))
        assert [v["datapoint_name"] for v in listed] == [*DEFINITIONS, "site_score"]


def test_post_by_id_and_by_name(client: TestClient, setup: Setup) -> None:
    s = setup
    r = _post(client, s, {"datapoint_id": s.ids["age"], "value": 30})
    created = ok(r, 201)
    assert created["success"] is True and set(created) == {"success", "id", "uuid"}
    got = _get(client, s, "age")
    assert got.headers["ETag"] == r.headers["ETag"]
    assert ok(got)["id"] == created["id"] and ok(got)["uuid"] == created["uuid"]
    # By name, case-insensitively (names are unique case-insensitively across a lineage).
    ok(_post(client, s, {"datapoint_name": "ARM", "value": "B"}), 201)
    assert ok(_get(client, s, "arm"))["value"] == "B"


def test_post_when_a_value_exists_is_409(client: TestClient, setup: Setup) -> None:
    s = setup
    ok(_post(client, s, {"datapoint_name": "age", "value": 30}), 201)
    error(_post(client, s, {"datapoint_name": "age", "value": 31}), 409, "conflict")
    error(_post(client, s, {"datapoint_id": s.ids["age"], "value": 31}), 409, "conflict")
    assert ok(_get(client, s, "age"))["value"] == 30


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"value": 1}, 400, "datapoint_id"),  # neither id nor name
        ({"datapoint_id": 1, "datapoint_name": "age", "value": 1}, 400, "datapoint_id"),  # both
        ({"datapoint_name": "age"}, 400, "value"),  # no value
        ({"datapoint_name": "age", "value": None}, 400, "value"),
        ({"datapoint_name": "age", "value": 1, "unit": "y"}, 400, "unit"),  # unknown field
        ({"datapoint_name": "age", "value": 1, "version": 3}, 400, "version"),
        ({"datapoint_name": "nope", "value": 1}, 404, None),
        ({"datapoint_name": "site_score", "value": 1}, 404, None),  # defined on a child only
        ({"datapoint_name": "elsewhere", "value": "x"}, 404, None),  # another tree
        ({"datapoint_id": MISSING, "value": 1}, 404, None),
    ],
)
def test_post_refusals(
    client: TestClient, setup: Setup, body: dict[str, Any], status: int, field: str | None
) -> None:
    s = setup
    if body.get("datapoint_name") in ("site_score", "elsewhere"):
        body = {"datapoint_id": s.ids[body["datapoint_name"]], "value": body["value"]}
    r = _post(client, s, body)
    if status == 400:
        assert fields_of(error(r, 400, "invalid_request")) == {field}
    else:
        error(r, 404, "not_found")
    assert all(v["value"] is None for v in ok(call(client, "GET", s.base, "viewer")))


def test_get_one_unset_and_unknown(client: TestClient, setup: Setup) -> None:
    s = setup
    r = _get(client, s, "note")
    assert ok(r)["value"] is None and ok(r)["datapoint_name"] == "note"
    assert "ETag" not in r.headers
    error(call(client, "GET", f"{s.base}/{s.ids['site_score']}", "viewer"), 404, "not_found")
    error(call(client, "GET", f"{s.base}/{MISSING}", "viewer"), 404, "not_found")


def test_put_changes_a_value_and_sets_an_unset_one(client: TestClient, setup: Setup) -> None:
    s = setup
    # PUT on a value that was never set sets it (version 1).
    r = _put(client, s, "note", "first")
    body = ok(r)
    assert (body["value"], body["version"]) == ("first", 1)
    assert r.headers["ETag"] == _get(client, s, "note").headers["ETag"]
    r = _put(client, s, "note", "second", who="manager")
    body = ok(r)
    assert (body["value"], body["version"]) == ("second", 2)
    assert body["creator"]["username"] == "member" and body["updated_by"]["username"] == "manager"
    error(_put(client, s, "site_score", 1.0), 404, "not_found")
    r = call(client, "PUT", f"{s.base}/{s.ids['note']}", "member", json={"value": "x", "note": 1})
    assert fields_of(error(r, 400, "invalid_request")) == {"note"}
    r = call(client, "PUT", f"{s.base}/{s.ids['note']}", "member", json={})
    assert fields_of(error(r, 400, "invalid_request")) == {"value"}


def test_put_if_match(client: TestClient, setup: Setup) -> None:
    s = setup
    etag = _put(client, s, "age", 40).headers["ETag"]
    r = _put(client, s, "age", 41, headers={"If-Match": etag})
    new_etag = r.headers["ETag"]
    assert ok(r)["value"] == 41 and new_etag != etag
    error(_put(client, s, "age", 42, headers={"If-Match": etag}), 412, "precondition_failed")
    assert ok(_get(client, s, "age"))["value"] == 41
    assert ok(_put(client, s, "age", 43, headers={"If-Match": new_etag}))["value"] == 43
    # An unset value has no ETag for If-Match to name.
    error(_put(client, s, "count", 1, headers={"If-Match": etag}), 412, "precondition_failed")
    assert ok(_get(client, s, "count"))["value"] is None


@pytest.mark.parametrize(
    ("who", "route", "read", "write"),
    [
        ("viewer", "trial", 200, 403),
        ("member", "trial", 200, 201),
        ("manager", "trial", 200, 201),
        ("admin", "trial", 200, 201),
        ("site_user", "trial", 404, 404),  # the patient lives in Trial
        ("outsider", "trial", 404, 404),
        ("outsider", "other", 404, 404),
        ("admin", "site", 404, 404),  # a parent's patient is not under the child
    ],
)
def test_who_may_read_and_write(
    client: TestClient, setup: Setup, who: str, route: str, read: int, write: int
) -> None:
    s = setup
    ok(_post(client, s, {"datapoint_name": "note", "value": "x"}), 201)
    base = f"/projects/{getattr(s.world, route)}/patients/{s.patient['id']}/datapoints"
    note, age = s.ids["note"], s.ids["age"]
    assert call(client, "GET", base, who).status_code == read
    assert call(client, "GET", f"{base}/{note}", who).status_code == read
    assert call(client, "GET", f"{base}/{note}/history", who).status_code == read
    r = call(client, "POST", base, who, json={"datapoint_id": age, "value": 5})
    assert r.status_code == write, r.text
    put_status = 200 if write == 201 else write
    assert call(client, "PUT", f"{base}/{note}", who, json={"value": "y"}).status_code == put_status
    if write != 201:
        assert r.json()["error"] == ("forbidden" if write == 403 else "not_found")
        assert ok(_get(client, s, "note"))["value"] == "x"
        assert ok(_get(client, s, "age"))["value"] is None


def test_site_patient_values_written_through_either_route(client: TestClient, setup: Setup) -> None:
    s = setup
    in_site = new_patient(client, s.world.site, "S1")
    for route, who, value in ((s.world.site, "site_user", 1.25), (s.world.trial, "member", 2.5)):
        base = f"/projects/{route}/patients/{in_site['id']}/datapoints"
        r = call(client, "PUT", f"{base}/{s.ids['site_score']}", who, json={"value": value})
        assert ok(r)["value"] == value
    # The viewer of Trial reads it, but may not change it.
    base = f"/projects/{s.world.trial}/patients/{in_site['id']}/datapoints/{s.ids['site_score']}"
    assert ok(call(client, "GET", base, "viewer"))["value"] == 2.5
    error(call(client, "PUT", base, "viewer", json={"value": 3.0}), 403, "forbidden")


# --- typing ---------------------------------------------------------------------

ROUND_TRIPS: list[tuple[str, Any, Any]] = [
    ("count", 0, 0),
    ("count", -17, -17),
    ("count", 2**53, 2**53),
    ("count", -(2**53), -(2**53)),
    ("count", 7.0, 7),  # a whole number written as 7.0 is the integer 7
    ("age", 0, 0),
    ("age", 120, 120),
    ("score", 0.1, 0.1),
    ("score", 123456.789, 123456.789),
    ("score", 0.30000000000000004, 0.30000000000000004),
    ("score", -2.5e-10, -2.5e-10),
    ("score", 1.7976931348623157e308, 1.7976931348623157e308),
    ("score", 3, 3.0),  # a decimal is a double: always shown as one
    ("score", 1e16, 1e16),  # PostgreSQL's JSONB gives this back as an integer
    ("score", -(2**53), -9007199254740992.0),
    ("weight", 0.5, 0.5),
    ("visit_date", "2024-02-29", "2024-02-29"),
    ("visit_date", "2000-01-01", "2000-01-01"),
    ("seen_at", "2024-03-01T10:00:00+02:00", "2024-03-01T08:00:00Z"),
    ("seen_at", "2024-03-01T23:30:00-05:00", "2024-03-02T04:30:00Z"),
    ("seen_at", "2024-03-01T08:00:00Z", "2024-03-01T08:00:00Z"),
    ("seen_at", "2024-03-01T08:00:00+00:00", "2024-03-01T08:00:00Z"),
    ("seen_at", "2024-03-01T08:00:00", "2024-03-01T08:00:00Z"),  # no offset: UTC
    ("seen_at", "2024-03-01T10:00:00.250+02:00", "2024-03-01T08:00:00.250000Z"),
    ("smoker", True, True),
    ("smoker", False, False),
    ("arm", "Placebo", "Placebo"),
    ("code", "ABC123", "ABC123"),
    ("note", "  spaces kept, ünïcode ✓  ", "  spaces kept, ünïcode ✓  "),
    ("note", "", ""),
    ("note", "x" * 1000, "x" * 1000),
]


@pytest.mark.parametrize(("name", "given", "stored"), ROUND_TRIPS)
def test_each_type_round_trips(client: TestClient, setup: Setup, name: str, given: Any, stored: Any) -> None:
    s = setup
    ok(_post(client, s, {"datapoint_name": name, "value": given}), 201)
    for read in (
        ok(_get(client, s, name))["value"],
        {v["datapoint_name"]: v for v in ok(call(client, "GET", s.base, "viewer"))}[name]["value"],
        {
            v["datapoint_name"]: v
            for v in ok(call(client, "GET", f"/patients/{s.patient['uuid']}", "viewer"))["datapoint_values"]
        }[name]["value"],
    ):
        assert read == stored
        assert type(read) is type(stored)


BAD_VALUES: list[tuple[str, Any, str]] = [
    ("count", True, "type"),  # JSON true is not the integer 1
    ("count", 1.5, "type"),
    ("count", "5", "type"),
    ("count", [1], "type"),
    ("count", 2**53 + 1, "range"),  # not exact as a double
    ("count", -(2**53) - 1, "range"),
    ("count", 10**30, "range"),
    ("count", 1e20, "range"),
    ("age", -1, "minimum"),
    ("age", 121, "maximum"),
    ("score", "0.1", "type"),
    ("score", False, "type"),
    ("score", {"v": 1}, "type"),
    ("score", 10**400, "range"),  # beyond any double
    ("score", 2**53 + 1, "range"),
    ("weight", 0.49, "minimum"),
    ("weight", 500.01, "maximum"),
    ("smoker", 1, "type"),  # 1 is not true
    ("smoker", 0, "type"),
    ("smoker", "true", "type"),
    ("visit_date", "2024-02-30", "type"),
    ("visit_date", "2023-02-29", "type"),
    ("visit_date", "2024-3-1", "type"),
    ("visit_date", "2024-03-01T10:00:00", "type"),
    ("visit_date", 20240301, "type"),
    ("visit_date", "1999-12-31", "minimum"),
    ("visit_date", "2031-01-01", "maximum"),
    ("seen_at", "2024-02-30T10:00:00Z", "type"),
    ("seen_at", "2024-03-01", "type"),
    ("seen_at", "yesterday", "type"),
    ("seen_at", "2024-03-01T25:00:00Z", "type"),
    ("seen_at", 1709280000, "type"),
    ("seen_at", "2000-01-01T00:30:00+01:00", "minimum"),  # 1999-12-31T23:30Z
    ("arm", "C", "choices"),
    ("arm", "a", "choices"),
    ("arm", 1, "type"),
    ("code", "abc", "pattern"),
    ("code", "ABCD", "pattern"),
    ("code", 123, "type"),
    ("note", "x" * 1001, "length"),
    ("note", 5, "type"),
    ("note", False, "type"),
]


@pytest.mark.parametrize(("name", "given", "rule"), BAD_VALUES)
def test_bad_values_name_the_field_and_the_rule(
    client: TestClient, setup: Setup, name: str, given: Any, rule: str
) -> None:
    s = setup
    for r in (
        _post(client, s, {"datapoint_name": name, "value": given}),
        _put(client, s, name, given),
    ):
        body = error(r, 400, "invalid_request")
        assert [d["field"] for d in body["details"]] == ["value"]
        message = body["details"][0]["message"]
        assert name in message and f"({rule})" in message, message
    assert ok(_get(client, s, name))["value"] is None


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused(client: TestClient, setup: Setup, literal: str) -> None:
    """JSON has no NaN or Infinity; a body that smuggles one in is refused, never stored."""
    s = setup
    client.cookies.clear()
    r = client.put(
        f"{API}{s.base}/{s.ids['score']}",
        content=f'{{"value": {literal}}}',
        headers={**basic("member"), "Content-Type": "application/json"},
    )
    assert error(r, 400, "invalid_request")["details"][0]["field"] in ("value", "body")
    assert ok(_get(client, s, "score"))["value"] is None


def test_an_invalid_edit_keeps_the_old_value(client: TestClient, setup: Setup) -> None:
    s = setup
    etag = _put(client, s, "age", 50).headers["ETag"]
    error(_put(client, s, "age", 500), 400, "invalid_request")
    r = _get(client, s, "age")
    assert (ok(r)["value"], ok(r)["version"], r.headers["ETag"]) == (50, 1, etag)


# --- history --------------------------------------------------------------------


def test_three_edits_leave_three_earlier_versions(client: TestClient, setup: Setup, fake_clock: Any) -> None:
    s = setup
    ok(_post(client, s, {"datapoint_name": "weight", "value": 70.5}), 201)  # v1 by member at t0
    t0 = fake_clock.current
    writes = [(71.0, "manager"), (72.25, "member"), (73.5, "manager")]
    for value, who in writes:
        fake_clock.advance(minutes=10)
        ok(_put(client, s, "weight", value, who=who))
    current = ok(_get(client, s, "weight"))
    assert (current["value"], current["version"], current["updated_by"]["username"]) == (73.5, 4, "manager")

    history = ok(call(client, "GET", f"{s.base}/{s.ids['weight']}/history", "viewer"))
    assert [h["version"] for h in history] == [3, 2, 1]  # newest first
    assert [h["value"] for h in history] == [72.25, 71.0, 70.5]
    # who wrote each version, and who replaced it
    assert [h["changed_by"]["username"] for h in history] == ["member", "manager", "member"]
    assert [h["replaced_by"]["username"] for h in history] == ["manager", "member", "manager"]
    # when: each version was written at t0 + 10 min * (version - 1), replaced 10 min later
    stamps = [(h["changed_at"], h["replaced_at"]) for h in history]
    expected = [(_iso(t0, minutes=10 * (v - 1)), _iso(t0, minutes=10 * v)) for v in (3, 2, 1)]
    assert [(_norm(a), _norm(b)) for a, b in stamps] == expected

    # Writing the same value again is no change: no new version, same ETag.
    etag = _get(client, s, "weight").headers["ETag"]
    r = _put(client, s, "weight", 73.5, who="member")
    assert ok(r)["version"] == 4 and r.headers["ETag"] == etag
    assert ok(r)["updated_by"]["username"] == "manager"
    assert len(ok(call(client, "GET", f"{s.base}/{s.ids['weight']}/history", "viewer"))) == 3


def _iso(start: Any, **delta: float) -> str:
    from datetime import timedelta

    return str((start + timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%S"))


def _norm(stamp: str) -> str:
    return stamp.replace("Z", "").replace("+00:00", "")[:19]


def test_history_of_a_value_never_changed_is_empty_and_of_an_unset_one_404(
    client: TestClient, setup: Setup
) -> None:
    s = setup
    ok(_post(client, s, {"datapoint_name": "arm", "value": "A"}), 201)
    assert ok(call(client, "GET", f"{s.base}/{s.ids['arm']}/history", "viewer")) == []
    error(call(client, "GET", f"{s.base}/{s.ids['note']}/history", "viewer"), 404, "not_found")
    error(call(client, "GET", f"{s.base}/{MISSING}/history", "viewer"), 404, "not_found")


@pytest.mark.parametrize(
    ("name", "first", "same"),
    [
        ("seen_at", "2024-03-01T10:00:00+02:00", "2024-03-01T08:00:00Z"),
        ("score", 3, 3.0),
        ("score", 1e300, 1e300),
        ("smoker", False, False),
        ("count", 7, 7.0),
    ],
)
def test_the_same_value_written_differently_is_no_change(
    client: TestClient, setup: Setup, name: str, first: Any, same: Any
) -> None:
    s = setup
    ok(_put(client, s, name, first))
    assert ok(_put(client, s, name, same))["version"] == 1
    assert ok(call(client, "GET", f"{s.base}/{s.ids[name]}/history", "viewer")) == []


def test_history_shows_decimals_as_doubles(client: TestClient, setup: Setup) -> None:
    s = setup
    ok(_put(client, s, "score", 2))
    ok(_put(client, s, "score", 1e300))
    history = ok(call(client, "GET", f"{s.base}/{s.ids['score']}/history", "viewer"))
    assert [h["value"] for h in history] == [2.0]
    client.cookies.clear()
    raw = client.get(f"{API}{s.base}/{s.ids['score']}/history", headers=basic("viewer")).text
    assert '"value":2.0' in raw.replace(" ", "")
    assert ok(_get(client, s, "score"))["value"] == 1e300


# --- concurrency ------------------------------------------------------------------


@pytest.fixture
def second_client(app: FastAPI) -> Iterator[TestClient]:
    """Another HTTP client of the same app: its own connection and cookie jar."""
    yield TestClient(app, base_url="http://testserver")


def _race(clients: list[TestClient], path: str, bodies: list[Any], who: list[str], etag: str) -> list[int]:
    """Send one PUT per client, all released at once from their own threads."""
    start = threading.Barrier(len(clients))
    statuses: list[int] = [0] * len(clients)

    def run(i: int) -> None:
        start.wait(timeout=10)
        r = clients[i].put(API + path, json={"value": bodies[i]}, headers={**basic(who[i]), "If-Match": etag})
        statuses[i] = r.status_code

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return statuses


def _check_one_winner(
    client: TestClient, s: Setup, statuses: list[int], bodies: list[Any], db: Session
) -> None:
    assert sorted(statuses) == [200, 412], statuses
    winner = bodies[statuses.index(200)]
    got = ok(_get(client, s, "score"))
    assert (got["value"], got["version"]) == (winner, 2)
    # The loser left nothing behind: one earlier version, the original.
    history = ok(call(client, "GET", f"{s.base}/{s.ids['score']}/history", "viewer"))
    assert [(h["version"], h["value"]) for h in history] == [(1, 1.0)]
    db.rollback()
    assert db.scalar(select(func.count()).select_from(DatapointValueVersion)) == 1
    assert db.scalar(select(func.count()).select_from(DatapointValue)) == 1


@pytest.mark.parametrize("attempt", range(3))
def test_two_clients_with_the_same_etag_one_wins(
    client: TestClient, second_client: TestClient, setup: Setup, db: Session, attempt: int
) -> None:
    s = setup
    etag = _put(client, s, "score", 1.0).headers["ETag"]
    bodies = [2.0, 3.0]
    path = f"{s.base}/{s.ids['score']}"
    statuses = _race([client, second_client], path, bodies, ["member", "manager"], etag)
    _check_one_winner(client, s, statuses, bodies, db)


def test_both_pass_the_etag_check_before_either_writes(
    client: TestClient, second_client: TestClient, setup: Setup, db: Session, database: Database
) -> None:
    """Force the worst interleaving: both requests have read version 1 and checked
    If-Match before either UPDATE runs. The version column in the UPDATE's WHERE
    must still let only one through.

    On SQLite a writing request holds the write lock from its first statement
    (BEGIN IMMEDIATE), so the second cannot get this far before the first
    commits; there the barrier times out and the requests run one after the other.
    """
    s = setup
    etag = _put(client, s, "score", 1.0).headers["ETag"]
    both_read = threading.Barrier(2)

    def hold_update(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE DATAPOINT_VALUES"):
            with contextlib.suppress(threading.BrokenBarrierError):
                both_read.wait(timeout=3 if database.is_sqlite else 20)

    event.listen(database.engine, "before_cursor_execute", hold_update)
    try:
        bodies = [2.0, 3.0]
        path = f"{s.base}/{s.ids['score']}"
        statuses = _race([client, second_client], path, bodies, ["member", "manager"], etag)
    finally:
        event.remove(database.engine, "before_cursor_execute", hold_update)
    if not database.is_sqlite:
        assert not both_read.broken  # both really reached their UPDATE together
    _check_one_winner(client, s, statuses, bodies, db)
