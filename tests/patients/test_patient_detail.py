"""The Patients API: GET/PUT /patients/{uuid}, a patient wherever it lives."""

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
    fields_of,
    make_world,
    new_patient,
    new_study,
    ok,
)

MISSING_UUID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def world(db: Session, settings: Settings) -> World:
    return make_world(db, settings)


def _detail(client: TestClient, patient: dict[str, Any], who: str = "viewer") -> Any:
    return ok(call(client, "GET", f"/patients/{patient['uuid']}", who))


def test_detail_embeds_studies_datapoints_and_values(client: TestClient, world: World) -> None:
    age = define(client, world.trial, "age", "integer")
    arm = define(client, world.trial, "arm", "choice", choices=["A", "B"])
    site_score = define(client, world.site, "site_score", "decimal")
    define(client, world.other, "other_thing", "string")  # applies elsewhere only
    patient = new_patient(client, world.site, "S1", sex="F")
    base = f"/projects/{world.trial}/patients/{patient['id']}"
    ok(call(client, "POST", base + "/datapoints", "member", json={"datapoint_id": age, "value": 42}), 201)
    ok(
        call(
            client,
            "POST",
            base + "/datapoints",
            "member",
            json={"datapoint_name": "site_score", "value": 0.5},
        ),
        201,
    )
    first = new_study(client, world.trial, patient["id"], visit="Baseline", modalities=["CT"])
    second = new_study(client, world.trial, patient["id"], visit="Week 12", modalities=["MR", "CT"])
    new_patient(client, world.site, "S2")  # another patient's data must not appear

    r = call(client, "GET", f"/patients/{patient['uuid']}", "viewer")
    body = ok(r)
    assert {k: body[k] for k in patient} == patient
    assert r.headers["ETag"] == call(client, "GET", base, "viewer").headers["ETag"]
    assert [(s["id"], s["visit"], s["modalities"]) for s in body["studies"]] == [
        (first["id"], "Baseline", ["CT"]),
        (second["id"], "Week 12", ["MR", "CT"]),
    ]
    assert [d["id"] for d in body["datapoints"]] == [age, arm, site_score]
    assert body["datapoints"][1]["choices"] == ["A", "B"]
    values = {v["datapoint_name"]: v for v in body["datapoint_values"]}
    assert list(values) == ["age", "arm", "site_score"]
    assert (values["age"]["value"], values["age"]["version"], values["age"]["patient_id"]) == (
        42,
        1,
        patient["id"],
    )
    assert values["age"]["creator"]["username"] == "member"
    assert values["arm"]["value"] is None and values["arm"]["id"] is None
    assert values["site_score"]["value"] == 0.5


def test_detail_of_a_parent_patient_has_only_the_parent_definitions(client: TestClient, world: World) -> None:
    age = define(client, world.trial, "age", "integer")
    define(client, world.site, "site_score", "decimal")
    patient = new_patient(client, world.trial, "T1")
    body = _detail(client, patient)
    assert [d["id"] for d in body["datapoints"]] == [age]
    assert [v["datapoint_id"] for v in body["datapoint_values"]] == [age]
    assert body["studies"] == []


@pytest.mark.parametrize(
    ("who", "home", "status"),
    [
        ("viewer", "trial", 200),
        ("viewer", "site", 200),
        ("site_user", "site", 200),
        ("admin", "other", 200),
        ("site_user", "trial", 404),  # a role on a subproject does not reach up
        ("outsider", "trial", 404),
        ("member", "other", 404),
    ],
)
def test_who_may_read_detail(client: TestClient, world: World, who: str, home: str, status: int) -> None:
    patient = new_patient(client, getattr(world, home), "P1", who="admin")
    r = call(client, "GET", f"/patients/{patient['uuid']}", who)
    assert r.status_code == status, r.text
    if status == 404:
        error(r, 404, "not_found")


def test_detail_missing_or_malformed_uuid(client: TestClient, world: World) -> None:
    error(call(client, "GET", f"/patients/{MISSING_UUID}", "admin"), 404, "not_found")
    error(call(client, "GET", "/patients/42", "admin"), 400, "invalid_request")


def test_put_detail_is_partial_and_returns_the_detail(client: TestClient, world: World) -> None:
    define(client, world.trial, "age", "integer")
    patient = new_patient(client, world.trial, "P1", patient_name="Doe^J", sex="M")
    new_study(client, world.trial, patient["id"])
    etag = call(client, "GET", f"/patients/{patient['uuid']}", "member").headers["ETag"]
    r = call(client, "PUT", f"/patients/{patient['uuid']}", "member", json={"birth_date": "1999-12-31"})
    body = ok(r)
    assert (body["birth_date"], body["sex"], body["patient_name"]) == ("1999-12-31", "M", "Doe^J")
    assert len(body["studies"]) == 1 and [v["datapoint_name"] for v in body["datapoint_values"]] == ["age"]
    assert r.headers["ETag"] != etag
    # The project-scoped view sees the same change and the same ETag.
    scoped = call(client, "GET", f"/projects/{world.trial}/patients/{patient['id']}", "viewer")
    assert ok(scoped)["birth_date"] == "1999-12-31"
    assert scoped.headers["ETag"] == r.headers["ETag"]


def test_put_detail_if_match(client: TestClient, world: World) -> None:
    patient = new_patient(client, world.trial, "P1")
    path = f"/patients/{patient['uuid']}"
    etag = call(client, "GET", path, "member").headers["ETag"]
    ok(call(client, "PUT", path, "member", json={"sex": "O"}, headers={"If-Match": etag}))
    r = call(client, "PUT", path, "member", json={"sex": "F"}, headers={"If-Match": etag})
    error(r, 412, "precondition_failed")
    assert _detail(client, patient)["sex"] == "O"


@pytest.mark.parametrize(
    ("who", "home", "status"),
    [
        ("member", "trial", 200),
        ("site_user", "site", 200),
        ("admin", "other", 200),
        ("viewer", "trial", 403),
        ("viewer", "site", 403),
        ("site_user", "trial", 404),
        ("outsider", "trial", 404),
    ],
)
def test_who_may_put_detail(client: TestClient, world: World, who: str, home: str, status: int) -> None:
    patient = new_patient(client, getattr(world, home), "P1", who="admin")
    r = call(client, "PUT", f"/patients/{patient['uuid']}", who, json={"patient_name": "New^Name"})
    assert r.status_code == status, r.text
    expected = "New^Name" if status == 200 else None
    assert _detail(client, patient, "admin")["patient_name"] == expected


def test_put_detail_validation_and_conflict(client: TestClient, world: World) -> None:
    patient = new_patient(client, world.trial, "P1")
    new_patient(client, world.trial, "P2")
    path = f"/patients/{patient['uuid']}"
    for body, field in [
        ({"sex": "Q"}, "sex"),
        ({"birth_date": "1990-02-30"}, "birth_date"),
        ({"studies": []}, "studies"),
        ({"datapoint_values": []}, "datapoint_values"),
    ]:
        assert fields_of(error(call(client, "PUT", path, "member", json=body), 400, "invalid_request")) == {
            field
        }
    error(call(client, "PUT", path, "member", json={"patient_id": "P2"}), 409, "conflict")
    error(call(client, "PUT", f"/patients/{MISSING_UUID}", "admin", json={}), 404, "not_found")
