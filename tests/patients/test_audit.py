"""Every write to patients, studies and values leaves one audit event with before/after.

Read back as a manager through GET /projects/{id}/audit (newest first).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from ipacs.config import Settings
from tests.patients.world import (
    World,
    call,
    define,
    error,
    make_world,
    new_patient,
    new_study,
    ok,
)


@pytest.fixture
def world(db: Session, settings: Settings) -> World:
    return make_world(db, settings)


class AuditLog:
    """New events since the last look, oldest first."""

    def __init__(self, client: TestClient, project_id: int) -> None:
        self.client = client
        self.project_id = project_id
        self.seen = 0

    def new(self) -> list[dict[str, Any]]:
        r = call(self.client, "GET", f"/projects/{self.project_id}/audit?limit=1000", "manager")
        events = [e for e in reversed(ok(r)) if e["id"] > self.seen]
        if events:
            self.seen = events[-1]["id"]
        return events

    def one(self, action: str, entity_type: str, entity_id: int) -> dict[str, Any]:
        events = self.new()
        assert [(e["action"], e["entity_type"], e["entity_id"]) for e in events] == [
            (action, entity_type, entity_id)
        ], events
        return events[0]


def test_patient_create_update_and_move(client: TestClient, world: World) -> None:
    log = AuditLog(client, world.trial)
    log.new()  # the projects' own creation
    patient = new_patient(client, world.trial, "P1", patient_name="Doe^J", sex="M")
    event = log.one("create", "patient", patient["id"])
    assert event["username"] == "member" and event["project_id"] == world.trial
    assert event["entity_uuid"] == patient["uuid"]
    assert event["before"] is None
    assert event["after"] == {
        "project_id": world.trial,
        "patient_id": "P1",
        "patient_name": "Doe^J",
        "birth_date": None,
        "sex": "M",
    }

    ok(
        call(
            client,
            "PUT",
            f"/patients/{patient['uuid']}",
            "manager",
            json={"sex": "F", "birth_date": "1980-05-06"},
        )
    )
    event = log.one("update", "patient", patient["id"])
    assert event["username"] == "manager"
    assert event["before"] == {"sex": "M", "birth_date": None}
    assert event["after"] == {"sex": "F", "birth_date": "1980-05-06"}

    # A move: one patient event, plus one for each study that followed the patient.
    study = new_study(client, world.trial, patient["id"])
    log.one("create", "study", study["id"])
    ok(
        call(
            client,
            "PUT",
            f"/projects/{world.trial}/patients/{patient['id']}",
            "member",
            json={"project_id": world.site},
        )
    )
    events = sorted(log.new(), key=lambda e: e["entity_type"])
    assert [(e["action"], e["entity_type"], e["entity_id"]) for e in events] == [
        ("update", "patient", patient["id"]),
        ("update", "study", study["id"]),
    ]
    assert (events[0]["before"], events[0]["after"]) == (
        {"project_id": world.trial},
        {"project_id": world.site},
    )
    assert (events[1]["before"], events[1]["after"]) == (
        {"project_id": world.trial},
        {"project_id": world.site},
    )
    assert all(e["project_id"] == world.site for e in events)


def test_study_create_and_update(client: TestClient, world: World) -> None:
    patient = new_patient(client, world.trial, "P1")
    log = AuditLog(client, world.trial)
    log.new()
    study = new_study(
        client, world.trial, patient["id"], visit="Baseline", modalities=["CT", "MR"], study_time="0930"
    )
    event = log.one("create", "study", study["id"])
    assert event["before"] is None
    after = event["after"]
    assert after["study_instance_uid"] == study["study_instance_uid"]
    assert (after["visit"], after["modalities"], after["study_time"], after["project_id"]) == (
        "Baseline",
        "CT\\MR",
        "09:30:00",
        world.trial,
    )
    path = f"/projects/{world.trial}/patients/{patient['id']}/studies/{study['id']}"
    ok(
        call(
            client,
            "PUT",
            path,
            "member",
            json={"visit": "Week 12", "status": "read", "project_id": world.site},
        )
    )
    event = log.one("update", "study", study["id"])
    assert event["before"] == {"visit": "Baseline", "status": None, "project_id": world.trial}
    assert event["after"] == {"visit": "Week 12", "status": "read", "project_id": world.site}


def test_value_create_and_update(client: TestClient, world: World) -> None:
    define(client, world.trial, "weight", "decimal")
    patient = new_patient(client, world.trial, "P1")
    log = AuditLog(client, world.trial)
    log.new()
    base = f"/projects/{world.trial}/patients/{patient['id']}/datapoints"
    created = ok(call(client, "POST", base, "member", json={"datapoint_name": "weight", "value": 70.5}), 201)
    event = log.one("create", "datapoint_value", created["id"])
    assert event["before"] is None
    assert event["after"] == {"patient_id": "P1", "datapoint": "weight", "value": 70.5}
    dp = ok(call(client, "GET", base, "viewer"))[0]["datapoint_id"]
    ok(call(client, "PUT", f"{base}/{dp}", "manager", json={"value": 71.25}))
    event = log.one("update", "datapoint_value", created["id"])
    assert event["username"] == "manager"
    assert event["before"] == {"value": 70.5}
    assert event["after"] == {"patient_id": "P1", "datapoint": "weight", "value": 71.25}


def test_a_put_that_sets_an_unset_value_is_audited_as_create(client: TestClient, world: World) -> None:
    dp = define(client, world.trial, "arm", "choice", choices=["A", "B"])
    patient = new_patient(client, world.trial, "P1")
    log = AuditLog(client, world.trial)
    log.new()
    path = f"/projects/{world.trial}/patients/{patient['id']}/datapoints/{dp}"
    value = ok(call(client, "PUT", path, "member", json={"value": "A"}))
    event = log.one("create", "datapoint_value", value["id"])
    assert event["after"] == {"patient_id": "P1", "datapoint": "arm", "value": "A"}


def test_no_change_and_refused_writes_leave_no_event(client: TestClient, world: World) -> None:
    dp = define(client, world.trial, "age", "integer", maximum=120)
    patient = new_patient(client, world.trial, "P1", sex="M")
    new_patient(client, world.trial, "P2")
    study = new_study(client, world.trial, patient["id"], visit="Baseline")
    value_path = f"/projects/{world.trial}/patients/{patient['id']}/datapoints/{dp}"
    ok(call(client, "PUT", value_path, "member", json={"value": 30}))
    log = AuditLog(client, world.trial)
    log.new()
    patient_path = f"/patients/{patient['uuid']}"
    study_path = f"/projects/{world.trial}/patients/{patient['id']}/studies/{study['id']}"
    # unchanged
    ok(call(client, "PUT", patient_path, "member", json={"sex": "M"}))
    ok(call(client, "PUT", patient_path, "member", json={}))
    ok(call(client, "PUT", study_path, "member", json={"visit": "Baseline"}))
    ok(call(client, "PUT", value_path, "member", json={"value": 30}))
    # refused
    error(call(client, "PUT", patient_path, "member", json={"patient_id": "P2"}), 409, "conflict")
    error(call(client, "PUT", patient_path, "viewer", json={"sex": "F"}), 403, "forbidden")
    error(
        call(client, "PUT", patient_path, "member", json={"sex": "F"}, headers={"If-Match": '"x.1"'}),
        412,
        "precondition_failed",
    )
    error(call(client, "PUT", value_path, "member", json={"value": 121}), 400, "invalid_request")
    error(
        call(client, "POST", f"/projects/{world.trial}/patients", "member", json={"patient_id": "P1"}),
        409,
        "conflict",
    )
    r = call(
        client,
        "POST",
        f"/projects/{world.trial}/patients/{patient['id']}/studies",
        "member",
        json={"study_instance_uid": study["study_instance_uid"]},
    )
    error(r, 409, "conflict")
    assert log.new() == []


def test_subproject_writes_are_in_the_parents_log_not_the_siblings(client: TestClient, world: World) -> None:
    trial_log, site_log = AuditLog(client, world.trial), AuditLog(client, world.site)
    trial_log.new()
    site_log.new()
    patient = new_patient(client, world.site, "S1", who="site_user")
    assert trial_log.one("create", "patient", patient["id"])["username"] == "site_user"
    assert site_log.one("create", "patient", patient["id"])["username"] == "site_user"
    new_patient(client, world.trial, "T1")
    assert [e["entity_type"] for e in site_log.new()] == []
