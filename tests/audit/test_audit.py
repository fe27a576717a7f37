"""The audit log: one event per write of projects, memberships and datapoint definitions,
none for a failed write, and GET /projects/{id}/audit over a subtree."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.datapoints.values import typed_value
from ipacs.db.engine import Database
from ipacs.models import AuditEvent, DatapointValue, Patient, User
from tests.conftest import FakeClock
from tests.factories import basic, grant, make_project, make_user

PROJECTS = "/api/v1.0/projects"
ADMIN = basic("root")
PROJECT_FIELDS = ("name", "description", "parent_id", "dicom_ae_title")


def _all_events(database: Database) -> list[AuditEvent]:
    with database.session() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


class Log:
    """Watches the audit table: what one request added to it."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.seen = len(_all_events(database))

    def new(self) -> list[AuditEvent]:
        events = _all_events(self.database)
        fresh, self.seen = events[self.seen :], len(events)
        return fresh

    def one(self) -> AuditEvent:
        fresh = self.new()
        assert len(fresh) == 1, [(e.action, e.entity_type) for e in fresh]
        return fresh[0]


@pytest.fixture
def log(database: Database) -> Log:
    return Log(database)


@pytest.fixture
def root(db: Session, settings: Settings) -> User:
    user = make_user(db, settings, "root", is_admin=True, full_name="Root Admin")
    db.commit()
    return user


def _ok(r: Any, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


# --- every write leaves exactly one event -------------------------------------------------------


def test_project_create_update_move_delete(client: TestClient, root: User, log: Log) -> None:
    trial = _ok(client.post(PROJECTS, json={"name": "Trial", "dicom_ae_title": "TRIAL"}, headers=ADMIN), 201)
    event = log.one()
    assert (event.action, event.entity_type, event.entity_id) == ("create", "project", trial["id"])
    assert (event.project_id, event.user_id, event.username) == (trial["id"], root.id, "root")
    assert event.entity_uuid == trial["uuid"]
    assert event.before is None
    assert event.after == {"name": "Trial", "description": "", "parent_id": None, "dicom_ae_title": "TRIAL"}

    other = _ok(client.post(PROJECTS, json={"name": "Other"}, headers=ADMIN), 201)
    log.one()
    site = _ok(client.post(PROJECTS, json={"name": "Site", "parent_id": trial["id"]}, headers=ADMIN), 201)
    assert log.one().after == {
        "name": "Site",
        "description": "",
        "parent_id": trial["id"],
        "dicom_ae_title": None,
    }

    url = f"{PROJECTS}/{site['id']}"
    _ok(client.put(url, json={"name": "Site", "description": "Lyon"}, headers=ADMIN))
    event = log.one()
    assert (event.action, event.entity_type, event.entity_id, event.project_id) == (
        "update",
        "project",
        site["id"],
        site["id"],
    )
    assert (event.before, event.after) == ({"description": ""}, {"description": "Lyon"})

    _ok(client.put(url, json={"parent_id": other["id"], "name": "Lyon"}, headers=ADMIN))
    event = log.one()
    assert event.before == {"name": "Site", "parent_id": trial["id"]}
    assert event.after == {"name": "Lyon", "parent_id": other["id"]}

    # An update that changes nothing records nothing.
    _ok(client.put(url, json={"description": "Lyon"}, headers=ADMIN))
    assert log.new() == []

    _ok(client.delete(url, headers=ADMIN))
    event = log.one()
    assert (event.action, event.entity_type, event.entity_id) == ("delete", "project", site["id"])
    assert event.entity_uuid == site["uuid"]
    # Recorded on the parent, whose log outlives the deleted project.
    assert event.project_id == other["id"]
    assert event.before == {
        "name": "Lyon",
        "description": "Lyon",
        "parent_id": other["id"],
        "dicom_ae_title": None,
    }
    assert event.after is not None
    assert event.after["deleted"]["projects"] == 1


def test_forced_delete_is_one_event_naming_what_went(
    client: TestClient, db: Session, root: User, log: Log
) -> None:
    trial = make_project(db, root, "Trial")
    site = make_project(db, root, "Site", parent=trial)
    make_project(db, root, "Cohort", parent=site)
    db.add(Patient(project_id=site.id, patient_id="P-1"))
    db.commit()
    log.new()
    _ok(client.delete(f"{PROJECTS}/{site.id}?force=true", headers=ADMIN))
    event = log.one()  # one event for the subtree, not one per project
    assert event.project_id == trial.id
    assert event.after is not None
    assert event.after["deleted"]["projects"] == 2
    assert event.after["deleted"]["patients"] == 1


def test_membership_grant_update_revoke(
    client: TestClient, db: Session, settings: Settings, root: User, log: Log
) -> None:
    trial = make_project(db, root, "Trial")
    bob = make_user(db, settings, "bob")
    db.commit()
    log.new()
    url = f"{PROJECTS}/{trial.id}/members/bob"

    member = _ok(client.put(url, json={"role": "viewer"}, headers=ADMIN))
    assert (member["username"], member["role"], member["project_id"]) == ("bob", "viewer", trial.id)
    event = log.one()
    assert (event.action, event.entity_type, event.entity_id, event.project_id) == (
        "grant",
        "membership",
        bob.id,
        trial.id,
    )
    assert (event.before, event.after) == (None, {"username": "bob", "role": "viewer"})

    _ok(client.put(url, json={"role": "manager"}, headers=ADMIN))
    event = log.one()
    assert event.action == "update"
    assert (event.before, event.after) == (
        {"username": "bob", "role": "viewer"},
        {"username": "bob", "role": "manager"},
    )

    # Granting the role already held changes nothing and records nothing.
    _ok(client.put(url, json={"role": "manager"}, headers=ADMIN))
    assert log.new() == []

    _ok(client.delete(url, headers=ADMIN))
    event = log.one()
    assert (event.action, event.entity_type, event.entity_id, event.project_id) == (
        "revoke",
        "membership",
        bob.id,
        trial.id,
    )
    assert (event.before, event.after) == ({"username": "bob", "role": "manager"}, None)
    assert _ok(client.get(f"{PROJECTS}/{trial.id}/members", headers=ADMIN)) == []


def test_datapoint_definition_create_update_delete(
    client: TestClient, db: Session, root: User, log: Log
) -> None:
    trial = make_project(db, root, "Trial")
    db.commit()
    log.new()
    url = f"{PROJECTS}/{trial.id}/datapoints"
    created = _ok(
        client.post(
            url, json={"name": "age", "type": "integer", "minimum": 0, "unit": "years"}, headers=ADMIN
        ),
        201,
    )
    event = log.one()
    assert (event.action, event.entity_type, event.entity_id, event.project_id) == (
        "create",
        "datapoint",
        created["id"],
        trial.id,
    )
    assert event.entity_uuid == created["uuid"]
    assert event.before is None
    assert event.after == {
        "name": "age",
        "label": None,
        "description": None,
        "type": "integer",
        "choices": None,
        "unit": "years",
        "minimum": 0,
        "maximum": None,
        "pattern": None,
        "required": False,
    }

    _ok(
        client.put(
            f"{url}/{created['id']}", json={"maximum": 120, "label": "Age", "unit": "years"}, headers=ADMIN
        )
    )
    event = log.one()
    assert event.action == "update"
    assert (event.before, event.after) == ({"label": None, "maximum": None}, {"label": "Age", "maximum": 120})

    _ok(client.put(f"{url}/{created['id']}", json={"label": "Age"}, headers=ADMIN))
    assert log.new() == []

    _ok(client.delete(f"{url}/{created['id']}", headers=ADMIN))
    event = log.one()
    assert (event.action, event.entity_type, event.entity_id, event.project_id) == (
        "delete",
        "datapoint",
        created["id"],
        trial.id,
    )
    assert event.before is not None
    assert (event.before["name"], event.before["label"], event.before["maximum"]) == ("age", "Age", 120)
    assert event.after == {"deleted_values": 0}


# --- a failed write leaves none -----------------------------------------------------------------


def test_failed_writes_leave_no_event(
    client: TestClient, db: Session, settings: Settings, root: User, log: Log
) -> None:
    trial = make_project(db, root, "Trial", dicom_ae_title="TRIAL")
    site = make_project(db, root, "Site", parent=trial)
    db.add(Patient(project_id=site.id, patient_id="P-1"))
    viewer = make_user(db, settings, "viewer")
    grant(db, trial, viewer, "viewer")
    db.commit()
    created = _ok(
        client.post(
            f"{PROJECTS}/{site.id}/datapoints", json={"name": "age", "type": "integer"}, headers=ADMIN
        ),
        201,
    )
    tag = client.get(f"{PROJECTS}/{site.id}", headers=ADMIN).headers["etag"]
    _ok(client.put(f"{PROJECTS}/{site.id}", json={"description": "moved on"}, headers=ADMIN))
    log.new()

    dp = f"{PROJECTS}/{site.id}/datapoints"
    failures: list[tuple[Callable[..., Any], str, dict[str, Any], dict[str, str], int]] = [
        (client.post, PROJECTS, {"name": "site", "parent_id": trial.id}, ADMIN, 409),
        (client.post, PROJECTS, {"name": "New", "dicom_ae_title": "TRIAL"}, ADMIN, 409),
        (client.post, PROJECTS, {"name": "New", "parent_id": trial.id}, basic("viewer"), 403),
        (client.post, PROJECTS, {"name": "a/b"}, ADMIN, 400),
        (client.put, f"{PROJECTS}/{site.id}", {"parent_id": site.id}, ADMIN, 409),
        (client.put, f"{PROJECTS}/{trial.id}", {"description": "x"}, basic("viewer"), 403),
        (client.put, f"{PROJECTS}/{site.id}/members/nobody", {"role": "viewer"}, ADMIN, 404),
        (client.put, f"{PROJECTS}/{site.id}/members/viewer", {"role": "owner"}, ADMIN, 400),
        (client.post, dp, {"name": "AGE", "type": "string"}, ADMIN, 409),
        (client.post, dp, {"name": "arm", "type": "choice"}, ADMIN, 400),
        (client.put, f"{dp}/{created['id']}", {"type": "choice"}, ADMIN, 400),
    ]
    for send, url, body, headers, status in failures:
        r = send(url, json=body, headers=headers)
        assert r.status_code == status, (url, body, r.text)
    for url, headers, status in (
        (f"{PROJECTS}/{trial.id}", ADMIN, 409),  # holds a subproject
        (f"{PROJECTS}/{site.id}", ADMIN, 409),  # holds a patient
        (f"{PROJECTS}/{site.id}/members/viewer", ADMIN, 404),  # granted on Trial, not here
        (f"{PROJECTS}/{site.id}", {**ADMIN, "If-Match": tag}, 412),
    ):
        assert client.delete(url, headers=headers).status_code == status, url
    r = client.put(f"{PROJECTS}/{site.id}", json={"name": "Stale"}, headers={**ADMIN, "If-Match": tag})
    assert r.status_code == 412
    assert log.new() == []


def test_definition_conflicts_with_values_leave_no_event(
    client: TestClient, db: Session, root: User, log: Log
) -> None:
    trial = make_project(db, root, "Trial")
    patient = Patient(project_id=trial.id, patient_id="P-1")
    db.add(patient)
    db.commit()
    url = f"{PROJECTS}/{trial.id}/datapoints"
    created = _ok(client.post(url, json={"name": "age", "type": "integer"}, headers=ADMIN), 201)
    typed = typed_value("integer", 150)
    db.add(
        DatapointValue(
            datapoint_id=created["id"], patient_id=patient.id, value=typed.value, num_value=typed.num
        )
    )
    db.commit()
    log.new()
    assert client.put(f"{url}/{created['id']}", json={"maximum": 100}, headers=ADMIN).status_code == 409
    assert client.delete(f"{url}/{created['id']}", headers=ADMIN).status_code == 409
    assert log.new() == []
    _ok(client.delete(f"{url}/{created['id']}?force=true", headers=ADMIN))
    assert log.one().after == {"deleted_values": 1}


# --- reading the log ----------------------------------------------------------------------------


@pytest.fixture
def history(
    client: TestClient, db: Session, settings: Settings, root: User, fake_clock: FakeClock
) -> dict[str, Any]:
    """A small history, one minute apart: Trial / Site / Cohort and a top-level Other."""
    make_user(db, settings, "alice")
    make_user(db, settings, "viewer")
    db.commit()
    times: list[datetime] = []

    def step(r: Any, status: int = 200) -> Any:
        times.append(fake_clock.current)
        fake_clock.advance(minutes=1)
        return _ok(r, status)

    trial = step(client.post(PROJECTS, json={"name": "Trial"}, headers=ADMIN), 201)  # 0
    other = step(client.post(PROJECTS, json={"name": "Other"}, headers=ADMIN), 201)  # 1
    site = step(
        client.post(PROJECTS, json={"name": "Site", "parent_id": trial["id"]}, headers=ADMIN), 201
    )  # 2
    step(client.put(f"{PROJECTS}/{site['id']}/members/alice", json={"role": "manager"}, headers=ADMIN))  # 3
    step(client.put(f"{PROJECTS}/{trial['id']}/members/viewer", json={"role": "viewer"}, headers=ADMIN))  # 4
    cohort = step(
        client.post(PROJECTS, json={"name": "Cohort", "parent_id": site["id"]}, headers=basic("alice")), 201
    )  # 5
    step(
        client.post(
            f"{PROJECTS}/{cohort['id']}/datapoints",
            json={"name": "age", "type": "integer"},
            headers=basic("alice"),
        ),
        201,
    )  # 6
    step(client.put(f"{PROJECTS}/{other['id']}", json={"description": "elsewhere"}, headers=ADMIN))  # 7
    step(client.put(f"{PROJECTS}/{trial['id']}", json={"description": "top"}, headers=ADMIN))  # 8
    return {"trial": trial, "other": other, "site": site, "cohort": cohort, "times": times}


def _audit(client: TestClient, project: dict[str, Any], who: str = "root", **params: Any) -> Any:
    return client.get(f"{PROJECTS}/{project['id']}/audit", params=params, headers=basic(who))


def _summary(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(e["action"], e["entity_type"], e["username"]) for e in events]


def test_log_lists_the_subtree_newest_first(client: TestClient, history: dict[str, Any]) -> None:
    r = _audit(client, history["trial"])
    assert r.status_code == 200
    assert r.headers["x-total-count"] == "7"
    events = r.json()
    assert _summary(events) == [
        ("update", "project", "root"),  # Trial's description
        ("create", "datapoint", "alice"),  # on Cohort
        ("create", "project", "alice"),  # Cohort
        ("grant", "membership", "root"),  # viewer on Trial
        ("grant", "membership", "root"),  # alice on Site
        ("create", "project", "root"),  # Site
        ("create", "project", "root"),  # Trial
    ]
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    times = [datetime.fromisoformat(e["occurred_at"]) for e in events]
    assert times == sorted(times, reverse=True)
    # Other's events are not Trial's.
    assert all(e["project_id"] != history["other"]["id"] for e in events)
    assert {e["project_id"] for e in events} == {
        history["trial"]["id"],
        history["site"]["id"],
        history["cohort"]["id"],
    }
    first = events[0]
    assert set(first) == {
        "id", "occurred_at", "user_id", "username", "action", "entity_type", "entity_id",
        "entity_uuid", "project_id", "before", "after",
    }  # fmt: skip
    assert (first["before"], first["after"]) == ({"description": ""}, {"description": "top"})

    # A subproject's log holds only its own subtree.
    site_events = _audit(client, history["site"]).json()
    assert _summary(site_events) == [
        ("create", "datapoint", "alice"),
        ("create", "project", "alice"),
        ("grant", "membership", "root"),
        ("create", "project", "root"),
    ]
    cohort_events = _audit(client, history["cohort"], "alice").json()
    assert _summary(cohort_events) == [("create", "datapoint", "alice"), ("create", "project", "alice")]


def test_log_pages(client: TestClient, history: dict[str, Any]) -> None:
    every = [e["id"] for e in _audit(client, history["trial"]).json()]
    seen: list[int] = []
    url: str | None = f"{PROJECTS}/{history['trial']['id']}/audit?limit=3"
    while url:
        r = client.get(url, headers=ADMIN)
        assert r.status_code == 200
        assert r.headers["x-total-count"] == "7"
        seen += [e["id"] for e in r.json()]
        link = r.headers.get("link")
        url = link[1 : link.index(">")] if link else None
    assert seen == every
    r = _audit(client, history["trial"], limit=3, offset=6)
    assert [e["id"] for e in r.json()] == every[6:]
    assert "link" not in r.headers
    assert _audit(client, history["trial"], limit=1001).status_code == 400


def test_log_filters(client: TestClient, history: dict[str, Any]) -> None:
    trial, times = history["trial"], history["times"]

    def actions(**params: Any) -> list[tuple[str, str, str | None]]:
        r = _audit(client, trial, **params)
        assert r.status_code == 200, r.text
        assert r.headers["x-total-count"] == str(len(r.json()))
        return _summary(r.json())

    assert actions(entity_type="membership") == [("grant", "membership", "root")] * 2
    assert actions(entity_type="datapoint") == [("create", "datapoint", "alice")]
    assert actions(entity_type="nothing") == []
    assert actions(username="alice") == [("create", "datapoint", "alice"), ("create", "project", "alice")]
    assert actions(username="ALICE") == []  # usernames match exactly
    assert actions(username="alice", entity_type="project") == [("create", "project", "alice")]
    # since is inclusive, until exclusive.
    assert actions(since=times[5].isoformat()) == [
        ("update", "project", "root"),
        ("create", "datapoint", "alice"),
        ("create", "project", "alice"),
    ]
    assert actions(until=times[2].isoformat()) == [("create", "project", "root")]
    assert (
        actions(since=times[3].isoformat(), until=times[5].isoformat())
        == [("grant", "membership", "root")] * 2
    )
    # The same instant in another offset, and a naive time (read as UTC), select the same events.
    paris = times[5].astimezone(timezone(timedelta(hours=2))).isoformat()
    assert actions(since=paris) == actions(since=times[5].isoformat())
    naive = times[5].astimezone(UTC).replace(tzinfo=None).isoformat()
    assert actions(since=naive) == actions(since=times[5].isoformat())
    assert _audit(client, trial, since="yesterday").status_code == 400


def test_log_is_for_managers(client: TestClient, history: dict[str, Any]) -> None:
    assert _audit(client, history["trial"], "viewer").status_code == 403
    assert _audit(client, history["site"], "viewer").status_code == 403
    assert _audit(client, history["trial"], "alice").status_code == 404  # alice manages Site only
    assert _audit(client, history["other"], "alice").status_code == 404
    assert _audit(client, history["site"], "alice").status_code == 200
    client.cookies.clear()  # no session left over from the requests above
    assert client.get(f"{PROJECTS}/{history['site']['id']}/audit").status_code == 401


def test_deleting_a_subproject_keeps_its_trace_in_the_parent_log(
    client: TestClient, history: dict[str, Any]
) -> None:
    site, cohort = history["site"], history["cohort"]
    _ok(client.delete(f"{PROJECTS}/{cohort['id']}?force=true", headers=basic("alice")))
    events = _audit(client, site, "alice").json()
    assert _summary(events)[0] == ("delete", "project", "alice")
    assert events[0]["entity_id"] == cohort["id"]
    assert events[0]["project_id"] == site["id"]
    assert events[0]["before"]["name"] == "Cohort"
