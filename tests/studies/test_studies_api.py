"""/projects/{id}/patients/{id}/studies: list, create, read and update study records."""

from __future__ import annotations

import re
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
    error,
    fields_of,
    make_world,
    new_patient,
    new_study,
    ok,
)

UID = "1.2.826.0.1.3680043.8.498.1"
DICOM_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


@pytest.fixture
def world(db: Session, settings: Settings) -> World:
    return make_world(db, settings)


@pytest.fixture
def patient(client: TestClient, world: World) -> dict[str, Any]:
    created: dict[str, Any] = new_patient(client, world.trial, "P1")
    return created


def _studies(world: World, patient: dict[str, Any], project: int | None = None) -> str:
    return f"/projects/{project or world.trial}/patients/{patient['id']}/studies"


# --- create -----------------------------------------------------------------


def test_create_with_every_field(client: TestClient, world: World, patient: dict[str, Any]) -> None:
    body = {
        "study_instance_uid": UID,
        "accession_number": " ACC-1 ",
        "study_date": "2024-03-01",
        "study_time": "0930",
        "description": "  Chest CT  ",
        "modalities": ["CT", "SR"],
        "visit": "Baseline",
        "status": "received",
    }
    r = call(client, "POST", _studies(world, patient), "member", json=body)
    created = ok(r, 201)
    assert created["success"] is True
    assert created["study_instance_uid"] == UID
    assert set(created) == {"success", "id", "uuid", "study_instance_uid"}
    study = call(client, "GET", f"{_studies(world, patient)}/{created['id']}", "viewer")
    assert study.headers["ETag"] == r.headers["ETag"]
    got = ok(study)
    assert got["uuid"] == created["uuid"]
    assert (got["patient_id"], got["project_id"]) == (patient["id"], world.trial)
    assert got["accession_number"] == "ACC-1" and got["description"] == "Chest CT"  # trimmed
    assert (got["study_date"], got["study_time"]) == ("2024-03-01", "09:30:00")
    assert got["modalities"] == ["CT", "SR"]
    assert (got["visit"], got["status"]) == ("Baseline", "received")
    assert (got["series_count"], got["instance_count"], got["size_bytes"]) == (0, 0, 0)
    assert got["creator"]["username"] == "member"


def test_create_generates_a_valid_uid(client: TestClient, world: World, patient: dict[str, Any]) -> None:
    first = new_study(client, world.trial, patient["id"])
    second = new_study(client, world.trial, patient["id"])
    for uid in (first["study_instance_uid"], second["study_instance_uid"]):
        assert DICOM_UID.fullmatch(uid) and len(uid) <= 64
    assert first["study_instance_uid"] != second["study_instance_uid"]
    got = ok(call(client, "GET", f"{_studies(world, patient)}/{first['id']}", "viewer"))
    assert got["modalities"] == [] and got["study_time"] is None


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("10:30", "10:30:00"),
        ("1030", "10:30:00"),
        ("103015", "10:30:15"),
        ("10:30:15", "10:30:15"),
        ("103015.5", "10:30:15.5"),
        ("23:59:59.999999", "23:59:59.999999"),
        ("00:00", "00:00:00"),
    ],
)
def test_study_time_is_normalised(
    client: TestClient, world: World, patient: dict[str, Any], given: str, stored: str
) -> None:
    created = new_study(client, world.trial, patient["id"], study_time=given)
    assert (
        ok(call(client, "GET", f"{_studies(world, patient)}/{created['id']}", "viewer"))["study_time"]
        == stored
    )


BAD_STUDIES: list[tuple[dict[str, Any], str]] = [
    ({"study_instance_uid": "abc"}, "study_instance_uid"),
    ({"study_instance_uid": "1.02.3"}, "study_instance_uid"),  # leading zero in a component
    ({"study_instance_uid": "1..2"}, "study_instance_uid"),
    ({"study_instance_uid": ".1.2"}, "study_instance_uid"),
    ({"study_instance_uid": "1.2."}, "study_instance_uid"),
    ({"study_instance_uid": "1." + "2" * 63}, "study_instance_uid"),  # 65 characters
    ({"study_instance_uid": ""}, "study_instance_uid"),
    ({"study_time": "25:00"}, "study_time"),
    ({"study_time": "10:60"}, "study_time"),
    ({"study_time": "10:30:61"}, "study_time"),
    ({"study_time": "1"}, "study_time"),
    ({"study_time": "10:30:00.1234567"}, "study_time"),
    ({"study_time": "noon"}, "study_time"),
    ({"study_date": "2024-02-30"}, "study_date"),
    ({"study_date": 20240301}, "study_date"),
    ({"study_date": "1709251200"}, "study_date"),  # not a Unix time
    ({"study_date": "2024-03-01T00:00:00"}, "study_date"),
    ({"modalities": ["ct"]}, "modalities"),
    ({"modalities": ["C T"]}, "modalities"),
    ({"modalities": [""]}, "modalities"),
    ({"modalities": "CT"}, "modalities"),
    ({"modalities": ["CT"] * 21}, "modalities"),
    ({"modalities": [f"MODALITY{i:08d}" for i in range(20)]}, "modalities"),  # too long together
    ({"accession_number": "A" * 65}, "accession_number"),
    ({"visit": "V" * 101}, "visit"),
    ({"status": "S" * 51}, "status"),
    ({"series_count": 3}, "series_count"),  # counts are never set by clients
    ({"instance_count": 3}, "instance_count"),
    ({"size_bytes": 3}, "size_bytes"),
    ({"patient_id": 1}, "patient_id"),
]


@pytest.mark.parametrize(("body", "field"), BAD_STUDIES)
def test_create_validation_names_the_field(
    client: TestClient, world: World, patient: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    r = call(client, "POST", _studies(world, patient), "member", json=body)
    assert fields_of(error(r, 400, "invalid_request")) == {field}
    assert ok(call(client, "GET", _studies(world, patient), "viewer")) == []


def test_duplicate_uid_is_409_anywhere(client: TestClient, world: World, patient: dict[str, Any]) -> None:
    new_study(client, world.trial, patient["id"], study_instance_uid=UID)
    error(
        call(client, "POST", _studies(world, patient), "member", json={"study_instance_uid": UID}),
        409,
        "conflict",
    )
    elsewhere = new_patient(client, world.other, "O1", who="outsider")
    r = call(
        client, "POST", _studies(world, elsewhere, world.other), "outsider", json={"study_instance_uid": UID}
    )
    error(r, 409, "conflict")


def test_create_in_a_subproject_of_the_patient(
    client: TestClient, world: World, patient: dict[str, Any], db: Session, settings: Settings
) -> None:
    created = new_study(client, world.trial, patient["id"], project_id=world.site)
    got = ok(call(client, "GET", f"{_studies(world, patient)}/{created['id']}", "viewer"))
    assert got["project_id"] == world.site
    # Only inside the patient's subtree: a parent or another tree is refused.
    in_site = new_patient(client, world.site, "S1")
    r = call(client, "POST", _studies(world, in_site), "member", json={"project_id": world.trial})
    assert fields_of(error(r, 400, "invalid_request")) == {"project_id"}
    r = call(client, "POST", _studies(world, patient), "admin", json={"project_id": world.other})
    assert fields_of(error(r, 400, "invalid_request")) == {"project_id"}
    r = call(client, "POST", _studies(world, patient), "member", json={"project_id": world.other})
    error(r, 404, "not_found")  # the member cannot see Other
    r = call(client, "POST", _studies(world, patient), "member", json={"project_id": MISSING})
    error(r, 404, "not_found")
    # A user of Trial who is only a viewer of... the target needs `user` too.
    mixed = make_user(db, settings, "mixed")
    trial = db.get(Project, world.trial)
    site = db.get(Project, world.site)
    assert trial is not None and site is not None
    grant(db, trial, mixed, "viewer")
    db.commit()
    r = call(client, "POST", _studies(world, in_site), "mixed", json={"project_id": world.site})
    error(r, 403, "forbidden")


@pytest.mark.parametrize(
    ("who", "home", "route", "status"),
    [
        ("member", "trial", "trial", 201),
        ("manager", "trial", "trial", 201),
        ("admin", "trial", "trial", 201),
        ("site_user", "site", "site", 201),
        ("member", "site", "trial", 201),
        ("viewer", "trial", "trial", 403),
        ("viewer", "site", "trial", 403),
        ("site_user", "trial", "trial", 404),
        ("site_user", "site", "trial", 404),  # no role on the route's project
        ("outsider", "trial", "trial", 404),
        ("admin", "trial", "site", 404),  # a parent's patient is not under the child
    ],
)
def test_who_may_create(
    client: TestClient, world: World, who: str, home: str, route: str, status: int
) -> None:
    target = new_patient(client, getattr(world, home), "P9", who="admin")
    r = call(client, "POST", _studies(world, target, getattr(world, route)), who, json={})
    assert r.status_code == status, r.text
    listed = ok(call(client, "GET", _studies(world, target, getattr(world, home)), "admin"))
    assert len(listed) == (1 if status == 201 else 0)


def test_create_for_missing_patient_is_404(client: TestClient, world: World) -> None:
    error(
        call(client, "POST", f"/projects/{world.trial}/patients/{MISSING}/studies", "admin", json={}),
        404,
        "not_found",
    )


# --- list and read ----------------------------------------------------------


def test_list_is_the_patients_studies_in_the_subtree(
    client: TestClient, world: World, patient: dict[str, Any]
) -> None:
    a = new_study(client, world.trial, patient["id"], visit="Baseline")
    b = new_study(client, world.trial, patient["id"], visit="Week 4", project_id=world.site)
    c = new_study(client, world.trial, patient["id"], visit="Week 8")
    other = new_patient(client, world.trial, "P2")
    new_study(client, world.trial, other["id"], visit="Other patient")
    r = call(client, "GET", _studies(world, patient), "viewer")
    assert [s["id"] for s in ok(r)] == [a["id"], b["id"], c["id"]]
    assert r.headers["X-Total-Count"] == "3"
    r = call(client, "GET", _studies(world, patient) + "?limit=2", "viewer")
    assert [s["visit"] for s in ok(r)] == ["Baseline", "Week 4"]
    assert 'rel="next"' in r.headers["Link"]
    r = call(client, "GET", _studies(world, patient) + f"?limit=2&after={b['id']}", "viewer")
    assert [s["visit"] for s in ok(r)] == ["Week 8"]
    assert "Link" not in r.headers


def test_list_and_read_permissions(client: TestClient, world: World, patient: dict[str, Any]) -> None:
    study = new_study(client, world.trial, patient["id"])
    one = f"{_studies(world, patient)}/{study['id']}"
    assert ok(call(client, "GET", one, "viewer"))["id"] == study["id"]
    for who in ("outsider", "site_user"):
        error(call(client, "GET", _studies(world, patient), who), 404, "not_found")
        error(call(client, "GET", one, who), 404, "not_found")
    # The patient lives in Trial: not reachable under Site, even for the administrator.
    error(
        call(client, "GET", f"{_studies(world, patient, world.site)}/{study['id']}", "admin"),
        404,
        "not_found",
    )
    error(call(client, "GET", f"{_studies(world, patient)}/{MISSING}", "admin"), 404, "not_found")
    # A study is read only through its own patient.
    other = new_patient(client, world.trial, "P2")
    error(call(client, "GET", f"{_studies(world, other)}/{study['id']}", "admin"), 404, "not_found")


def test_site_patient_studies_seen_from_both_levels(client: TestClient, world: World) -> None:
    in_site = new_patient(client, world.site, "S1")
    study = new_study(client, world.site, in_site["id"], who="site_user")
    for route, who in ((world.site, "site_user"), (world.trial, "viewer")):
        assert [s["id"] for s in ok(call(client, "GET", _studies(world, in_site, route), who))] == [
            study["id"]
        ]
        ok(call(client, "GET", f"{_studies(world, in_site, route)}/{study['id']}", who))


# --- update -----------------------------------------------------------------


def test_update_is_partial(client: TestClient, world: World, patient: dict[str, Any]) -> None:
    created = new_study(
        client, world.trial, patient["id"], visit="Baseline", modalities=["CT"], study_date="2024-01-02"
    )
    one = f"{_studies(world, patient)}/{created['id']}"
    before = call(client, "GET", one, "member")
    r = call(
        client,
        "PUT",
        one,
        "member",
        json={"description": " Re-read ", "status": "reviewed", "study_time": "0800"},
    )
    body = ok(r)
    assert r.headers["ETag"] != before.headers["ETag"]
    assert (body["description"], body["status"], body["study_time"]) == ("Re-read", "reviewed", "08:00:00")
    assert (body["visit"], body["modalities"], body["study_date"]) == ("Baseline", ["CT"], "2024-01-02")
    assert body["study_instance_uid"] == created["study_instance_uid"]
    body = ok(
        call(
            client,
            "PUT",
            one,
            "member",
            json={
                "visit": "Week 12",
                "accession_number": "A7",
                "study_date": "2024-04-01",
                "modalities": ["MR"],
            },
        )
    )
    assert (body["visit"], body["accession_number"], body["study_date"], body["modalities"]) == (
        "Week 12",
        "A7",
        "2024-04-01",
        ["MR"],
    )
    body = ok(call(client, "PUT", one, "member", json={"visit": None, "modalities": None}))
    assert (body["visit"], body["modalities"], body["description"]) == (None, [], "Re-read")
    assert ok(call(client, "GET", one, "viewer")) == body


def test_update_moves_within_the_patients_tree(
    client: TestClient, world: World, patient: dict[str, Any]
) -> None:
    created = new_study(client, world.trial, patient["id"])
    one = f"{_studies(world, patient)}/{created['id']}"
    assert ok(call(client, "PUT", one, "member", json={"project_id": world.site}))["project_id"] == world.site
    assert (
        ok(call(client, "PUT", one, "member", json={"project_id": world.trial}))["project_id"] == world.trial
    )
    r = call(client, "PUT", one, "admin", json={"project_id": world.other})
    assert fields_of(error(r, 400, "invalid_request")) == {"project_id"}
    error(call(client, "PUT", one, "member", json={"project_id": world.other}), 404, "not_found")
    assert ok(call(client, "GET", one, "viewer"))["project_id"] == world.trial


def test_update_validation(client: TestClient, world: World, patient: dict[str, Any]) -> None:
    created = new_study(client, world.trial, patient["id"])
    one = f"{_studies(world, patient)}/{created['id']}"
    before = ok(call(client, "GET", one, "viewer"))
    for body, field in [
        ({"study_instance_uid": UID}, "study_instance_uid"),  # the UID is fixed once created
        ({"study_time": "24:00"}, "study_time"),
        ({"modalities": ["mr"]}, "modalities"),
        ({"study_date": "2023-02-29"}, "study_date"),
        ({"series_count": 1}, "series_count"),
        ({"id": 1}, "id"),
    ]:
        assert fields_of(error(call(client, "PUT", one, "member", json=body), 400, "invalid_request")) == {
            field
        }
    assert ok(call(client, "GET", one, "viewer")) == before


def test_update_if_match(client: TestClient, world: World, patient: dict[str, Any]) -> None:
    created = new_study(client, world.trial, patient["id"])
    one = f"{_studies(world, patient)}/{created['id']}"
    etag = call(client, "GET", one, "member").headers["ETag"]
    r = call(client, "PUT", one, "member", json={"visit": "A"}, headers={"If-Match": etag})
    new_etag = r.headers["ETag"]
    assert ok(r)["visit"] == "A"
    error(
        call(client, "PUT", one, "member", json={"visit": "B"}, headers={"If-Match": etag}),
        412,
        "precondition_failed",
    )
    assert ok(call(client, "GET", one, "viewer"))["visit"] == "A"
    assert (
        ok(call(client, "PUT", one, "member", json={"visit": "C"}, headers={"If-Match": new_etag}))["visit"]
        == "C"
    )


@pytest.mark.parametrize(
    ("who", "status"),
    [("member", 200), ("admin", 200), ("viewer", 403), ("site_user", 404), ("outsider", 404)],
)
def test_who_may_update(
    client: TestClient, world: World, patient: dict[str, Any], who: str, status: int
) -> None:
    created = new_study(client, world.trial, patient["id"])
    one = f"{_studies(world, patient)}/{created['id']}"
    r = call(client, "PUT", one, who, json={"visit": "Week 1"})
    assert r.status_code == status, r.text
    assert ok(call(client, "GET", one, "admin"))["visit"] == ("Week 1" if status == 200 else None)


def test_update_missing_study_is_404(client: TestClient, world: World, patient: dict[str, Any]) -> None:
    error(call(client, "PUT", f"{_studies(world, patient)}/{MISSING}", "admin", json={}), 404, "not_found")
