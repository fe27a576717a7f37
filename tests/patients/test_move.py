"""Moving a patient to another project: `project_id` in a patient PUT.

Allowed only where the caller is `user` or more at both ends; the patient's
studies outside the target subtree follow it; refused with 409 while the
patient holds values of datapoints that would no longer apply.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.models import Project
from tests.factories import grant, make_user
from tests.patients.world import (
    MISSING,
    World,
    call,
    define,
    error,
    make_world,
    new_patient,
    new_study,
    ok,
    subproject,
)


@pytest.fixture
def world(db: Session, settings: Settings) -> World:
    return make_world(db, settings)


def _move(client: TestClient, who: str, patient: dict[str, Any], target: int, **kwargs: Any) -> Any:
    return call(client, "PUT", f"/patients/{patient['uuid']}", who, json={"project_id": target}, **kwargs)


def _home(client: TestClient, patient: dict[str, Any]) -> int:
    project: int = ok(call(client, "GET", f"/patients/{patient['uuid']}", "admin"))["project_id"]
    return project


def test_move_down_and_up_as_user_of_both_ends(client: TestClient, world: World) -> None:
    patient = new_patient(client, world.trial, "P1")
    r = call(
        client,
        "PUT",
        f"/projects/{world.trial}/patients/{patient['id']}",
        "member",
        json={"project_id": world.site},
    )
    assert ok(r)["project_id"] == world.site
    # Now the site's own users see it under the site.
    assert ok(call(client, "GET", f"/projects/{world.site}/patients", "site_user"))[0]["id"] == patient["id"]
    r = call(
        client,
        "PUT",
        f"/projects/{world.trial}/patients/uuid/{patient['uuid']}",
        "member",
        json={"project_id": world.trial},
    )
    assert ok(r)["project_id"] == world.trial
    error(
        call(client, "GET", f"/projects/{world.site}/patients/{patient['id']}", "site_user"), 404, "not_found"
    )


@pytest.mark.parametrize(
    ("who", "home", "target", "status"),
    [
        ("admin", "trial", "other", 200),
        ("member", "site", "trial", 200),
        ("site_user", "site", "trial", 404),  # cannot see the target
        ("member", "trial", "other", 404),  # cannot see the target
        ("mixed", "site", "trial", 403),  # user on Site but only viewer on Trial
        ("viewer", "trial", "site", 403),  # viewer at the source
        ("outsider", "trial", "other", 404),  # cannot see the patient
        ("admin", "trial", "missing", 404),
    ],
)
def test_who_may_move(
    client: TestClient,
    world: World,
    db: Session,
    settings: Settings,
    who: str,
    home: str,
    target: str,
    status: int,
) -> None:
    mixed = make_user(db, settings, "mixed")
    grant(db, _project(db, world.site), mixed, "user")
    grant(db, _project(db, world.trial), mixed, "viewer")
    db.commit()
    patient = new_patient(client, getattr(world, home), "P1", who="admin")
    target_id = MISSING if target == "missing" else getattr(world, target)
    r = _move(client, who, patient, target_id)
    assert r.status_code == status, r.text
    assert _home(client, patient) == (target_id if status == 200 else getattr(world, home))


def _project(db: Session, project_id: int) -> Project:
    project = db.get(Project, project_id)
    assert project is not None
    return project


def test_studies_outside_the_target_subtree_follow_the_patient(
    client: TestClient, world: World, db: Session
) -> None:
    ward = subproject(db, world.site, "Ward")
    patient = new_patient(client, world.trial, "P1")
    in_trial = new_study(client, world.trial, patient["id"])
    in_site = new_study(client, world.trial, patient["id"], project_id=world.site)
    in_ward = new_study(client, world.trial, patient["id"], project_id=ward)
    before = {
        s["id"]: call(
            client, "GET", f"/projects/{world.trial}/patients/{patient['id']}/studies/{s['id']}", "admin"
        )
        for s in (in_trial, in_site, in_ward)
    }

    ok(_move(client, "member", patient, world.site))
    studies = {
        s["id"]: s for s in ok(call(client, "GET", f"/patients/{patient['uuid']}", "admin"))["studies"]
    }
    assert studies[in_trial["id"]]["project_id"] == world.site  # was outside Site: follows
    assert studies[in_site["id"]]["project_id"] == world.site  # already inside: stays
    assert studies[in_ward["id"]]["project_id"] == ward  # inside Site's subtree: stays
    # The study that moved is a changed resource: its ETag and updated_at changed.
    moved = call(
        client, "GET", f"/projects/{world.trial}/patients/{patient['id']}/studies/{in_trial['id']}", "admin"
    )
    assert moved.headers["ETag"] != before[in_trial["id"]].headers["ETag"]
    assert ok(moved)["updated_at"] >= before[in_trial["id"]].json()["updated_at"]
    kept = call(
        client, "GET", f"/projects/{world.trial}/patients/{patient['id']}/studies/{in_site['id']}", "admin"
    )
    assert kept.headers["ETag"] == before[in_site["id"]].headers["ETag"]

    # To another tree: every study follows.
    ok(_move(client, "admin", patient, world.other))
    studies_after = ok(call(client, "GET", f"/patients/{patient['uuid']}", "admin"))["studies"]
    assert {s["project_id"] for s in studies_after} == {world.other}
    assert ok(call(client, "GET", f"/projects/{world.other}/patients/{patient['id']}/studies", "outsider"))


def test_move_refused_while_values_would_stop_applying(client: TestClient, world: World) -> None:
    define(client, world.trial, "age", "integer")
    define(client, world.site, "site_score", "decimal")
    patient = new_patient(client, world.site, "S1")
    base = f"/projects/{world.site}/patients/{patient['id']}/datapoints"
    ok(call(client, "POST", base, "member", json={"datapoint_name": "age", "value": 30}), 201)
    # A value of a Trial datapoint still applies in Trial: the move is allowed.
    ok(_move(client, "member", patient, world.trial))
    ok(_move(client, "member", patient, world.site))
    ok(call(client, "POST", base, "member", json={"datapoint_name": "site_score", "value": 1.5}), 201)
    body = error(_move(client, "member", patient, world.trial), 409, "conflict")
    assert "1 datapoint value" in body["message"]
    # To another tree even the Trial datapoint's value would be orphaned.
    body = error(_move(client, "admin", patient, world.other), 409, "conflict")
    assert "2 datapoint values" in body["message"]
    assert _home(client, patient) == world.site
    # Down into a subproject, every datapoint keeps applying.
    ward = subproject_via_api(client, world.site, "Ward")
    assert ok(_move(client, "member", patient, ward))["project_id"] == ward


def subproject_via_api(client: TestClient, parent: int, name: str) -> int:
    r = call(client, "POST", "/projects", "admin", json={"name": name, "parent_id": parent})
    project: int = ok(r, 201)["id"]
    return project


def test_move_onto_a_taken_patient_id_is_409(client: TestClient, world: World) -> None:
    patient = new_patient(client, world.trial, "P1")
    new_patient(client, world.site, "P1")
    error(_move(client, "member", patient, world.site), 409, "conflict")
    # Renaming in the same request makes room.
    r = call(
        client,
        "PUT",
        f"/patients/{patient['uuid']}",
        "member",
        json={"project_id": world.site, "patient_id": "P1b"},
    )
    assert (ok(r)["project_id"], ok(r)["patient_id"]) == (world.site, "P1b")


def test_move_with_stale_etag_is_412(client: TestClient, world: World) -> None:
    patient = new_patient(client, world.trial, "P1")
    etag = call(client, "GET", f"/patients/{patient['uuid']}", "member").headers["ETag"]
    ok(call(client, "PUT", f"/patients/{patient['uuid']}", "member", json={"sex": "F"}))
    error(
        _move(client, "member", patient, world.site, headers={"If-Match": etag}), 412, "precondition_failed"
    )
    assert _home(client, patient) == world.trial
