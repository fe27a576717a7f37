"""The project-scoped patient endpoints: create, list, read and update by id and by UUID."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from ipacs import clock
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
    ok,
)


@pytest.fixture
def world(db: Session, settings: Settings) -> World:
    return make_world(db, settings)


# --- create -----------------------------------------------------------------


def test_create_returns_the_patient_with_etag_and_creator(client: TestClient, world: World) -> None:
    r = call(
        client,
        "POST",
        f"/projects/{world.trial}/patients",
        "member",
        json={
            "patient_id": "  P-001  ",
            "patient_name": "  Doe^Jane ",
            "birth_date": "1980-02-29",
            "sex": "F",
        },
    )
    body = ok(r, 201)
    assert body["patient_id"] == "P-001"  # trimmed
    assert body["patient_name"] == "Doe^Jane"
    assert body["birth_date"] == "1980-02-29"
    assert body["sex"] == "F"
    assert body["project_id"] == world.trial
    assert body["creator"]["username"] == "member"
    assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00")
    assert r.headers["ETag"].startswith('"')
    again = ok(call(client, "GET", f"/projects/{world.trial}/patients/{body['id']}", "viewer"))
    assert again == body


def test_create_needs_only_patient_id(client: TestClient, world: World) -> None:
    body = new_patient(client, world.trial, "P1")
    assert (body["patient_name"], body["birth_date"], body["sex"]) == (None, None, None)


BAD_PATIENTS: list[tuple[dict[str, Any], str]] = [
    ({}, "patient_id"),
    ({"patient_id": ""}, "patient_id"),
    ({"patient_id": "   "}, "patient_id"),  # empty once trimmed
    ({"patient_id": "X" * 65}, "patient_id"),
    ({"patient_id": "A\\B"}, "patient_id"),  # backslash separates DICOM values
    ({"patient_id": "A\nB"}, "patient_id"),  # control character
    ({"patient_id": 12}, "patient_id"),
    ({"patient_id": "P", "sex": "X"}, "sex"),
    ({"patient_id": "P", "sex": "f"}, "sex"),
    ({"patient_id": "P", "sex": "male"}, "sex"),
    ({"patient_id": "P", "birth_date": "2024-02-30"}, "birth_date"),
    ({"patient_id": "P", "birth_date": "2023-13-01"}, "birth_date"),
    ({"patient_id": "P", "birth_date": "yesterday"}, "birth_date"),
    ({"patient_id": "P", "birth_date": 86400}, "birth_date"),  # not a Unix time
    ({"patient_id": "P", "birth_date": "86400"}, "birth_date"),
    ({"patient_id": "P", "birth_date": "1980-01-01T00:00:00"}, "birth_date"),
    ({"patient_id": "P", "birth_date": "1980-1-1"}, "birth_date"),
    ({"patient_id": "P", "patient_name": "N" * 201}, "patient_name"),
    ({"patient_id": "P", "colour": "blue"}, "colour"),
    ({"patient_id": "P", "id": 5}, "id"),
    ({"patient_id": "P", "project_id": 5}, "project_id"),
]


@pytest.mark.parametrize(("body", "field"), BAD_PATIENTS)
def test_create_validation_names_the_field(
    client: TestClient, world: World, body: dict[str, Any], field: str
) -> None:
    r = call(client, "POST", f"/projects/{world.trial}/patients", "member", json=body)
    assert fields_of(error(r, 400, "invalid_request")) == {field}


def test_unknown_field_is_called_unknown(client: TestClient, world: World) -> None:
    r = call(client, "POST", f"/projects/{world.trial}/patients", "member", json={"patient_id": "P", "x": 1})
    body = error(r, 400, "invalid_request")
    assert body["details"] == [{"field": "x", "message": "unknown field"}]
    assert "x" in body["message"]


def test_birth_date_in_the_future_is_refused_today_is_not(client: TestClient, world: World) -> None:
    today = clock.now().date()
    tomorrow = (today + timedelta(days=1)).isoformat()
    r = call(
        client,
        "POST",
        f"/projects/{world.trial}/patients",
        "member",
        json={"patient_id": "P", "birth_date": tomorrow},
    )
    body = error(r, 400, "invalid_request")
    assert fields_of(body) == {"birth_date"}
    assert "future" in body["details"][0]["message"]
    assert (
        new_patient(client, world.trial, "P", birth_date=today.isoformat())["birth_date"] == today.isoformat()
    )


def test_patient_id_is_unique_within_a_project_only(client: TestClient, world: World) -> None:
    new_patient(client, world.trial, "P1")
    r = call(client, "POST", f"/projects/{world.trial}/patients", "member", json={"patient_id": "P1"})
    error(r, 409, "conflict")
    # Trimming happens before the check.
    r = call(client, "POST", f"/projects/{world.trial}/patients", "member", json={"patient_id": " P1 "})
    error(r, 409, "conflict")
    # Another project (even a subproject) may use the same PatientID.
    assert new_patient(client, world.site, "P1")["project_id"] == world.site
    assert new_patient(client, world.other, "P1", who="outsider")["project_id"] == world.other


@pytest.mark.parametrize(
    ("who", "project", "status"),
    [
        ("admin", "trial", 201),
        ("manager", "trial", 201),
        ("member", "trial", 201),
        ("member", "site", 201),  # roles inherit downward
        ("site_user", "site", 201),
        ("viewer", "trial", 403),
        ("viewer", "site", 403),
        ("site_user", "trial", 404),  # a role on a child never reaches up
        ("outsider", "trial", 404),
        ("member", "other", 404),
    ],
)
def test_who_may_create(client: TestClient, world: World, who: str, project: str, status: int) -> None:
    project_id = getattr(world, project)
    r = call(client, "POST", f"/projects/{project_id}/patients", who, json={"patient_id": "P"})
    assert r.status_code == status, r.text


def test_create_in_missing_project_is_404_and_anonymous_is_401(client: TestClient, world: World) -> None:
    error(
        call(client, "POST", f"/projects/{MISSING}/patients", "admin", json={"patient_id": "P"}),
        404,
        "not_found",
    )
    client.cookies.clear()
    r = client.post(f"/api/v1.0/projects/{world.trial}/patients", json={"patient_id": "P"})
    error(r, 401, "unauthorized")


# --- list -------------------------------------------------------------------


def _ids(r: Any) -> list[str]:
    return [p["patient_id"] for p in ok(r)]


def test_list_filters_search_and_recursive(client: TestClient, world: World) -> None:
    new_patient(client, world.trial, "P-2", patient_name="Smith^Anna")
    new_patient(client, world.trial, "P-1", patient_name="Jones^Bob")
    new_patient(client, world.trial, "Q_1")
    new_patient(client, world.site, "S-1", patient_name="Smithers^Carl")
    new_patient(client, world.other, "O-1", who="outsider", patient_name="Smith^Other")
    base = f"/projects/{world.trial}/patients"

    assert _ids(call(client, "GET", base, "viewer")) == ["P-2", "P-1", "Q_1"]  # id order
    assert _ids(call(client, "GET", base + "?recursive=true", "viewer")) == ["P-2", "P-1", "Q_1", "S-1"]
    assert _ids(call(client, "GET", base + "?patient_id=P-1", "viewer")) == ["P-1"]
    assert _ids(call(client, "GET", base + "?patient_id=P", "viewer")) == []  # exact, not partial
    # search: partial, case-insensitive, over patient_id and patient_name
    assert _ids(call(client, "GET", base + "?search=smith", "viewer")) == ["P-2"]
    assert _ids(call(client, "GET", base + "?search=SMITH&recursive=true", "viewer")) == ["P-2", "S-1"]
    assert _ids(call(client, "GET", base + "?search=p-", "viewer")) == ["P-2", "P-1"]
    # LIKE wildcards in the search text are literal
    assert _ids(call(client, "GET", base + "?search=_", "viewer")) == ["Q_1"]
    assert _ids(call(client, "GET", base + "?search=%25", "viewer")) == []
    # the site's own list holds only its patients
    assert _ids(call(client, "GET", f"/projects/{world.site}/patients?recursive=true", "site_user")) == [
        "S-1"
    ]


def test_list_sorts(client: TestClient, world: World, fake_clock: Any) -> None:
    for pid in ("B", "C", "A"):
        new_patient(client, world.trial, pid)
        fake_clock.advance(seconds=1)
    base = f"/projects/{world.trial}/patients"
    assert _ids(call(client, "GET", base + "?sort=patient_id", "viewer")) == ["A", "B", "C"]
    assert _ids(call(client, "GET", base + "?sort=-patient_id", "viewer")) == ["C", "B", "A"]
    assert _ids(call(client, "GET", base + "?sort=created_at", "viewer")) == ["B", "C", "A"]
    assert _ids(call(client, "GET", base + "?sort=-created_at", "viewer")) == ["A", "C", "B"]
    error(call(client, "GET", base + "?sort=name", "viewer"), 400, "invalid_request")


def test_list_pages_with_total_and_next_link(client: TestClient, world: World) -> None:
    for i in range(5):
        new_patient(client, world.trial, f"P{i}")
    base = f"/projects/{world.trial}/patients"
    r = call(client, "GET", base + "?limit=2", "viewer")
    assert _ids(r) == ["P0", "P1"]
    assert r.headers["X-Total-Count"] == "5"
    link = r.headers["Link"]
    assert link.endswith('; rel="next"') and "after=" in link
    next_url = link[1 : link.index(">")].removeprefix("http://testserver/api/v1.0")
    r = call(client, "GET", next_url, "viewer")
    assert _ids(r) == ["P2", "P3"]
    r = call(client, "GET", base + "?limit=2&offset=4", "viewer")
    assert _ids(r) == ["P4"]
    assert "Link" not in r.headers
    r = call(client, "GET", base + "?sort=patient_id&limit=2", "viewer")
    assert "offset=2" in r.headers["Link"]
    error(call(client, "GET", base + "?limit=1001", "viewer"), 400, "invalid_request")
    error(call(client, "GET", base + "?limit=0", "viewer"), 400, "invalid_request")


@pytest.mark.parametrize(
    ("who", "project", "status"),
    [
        ("viewer", "trial", 200),
        ("site_user", "site", 200),
        ("site_user", "trial", 404),
        ("outsider", "trial", 404),
    ],
)
def test_who_may_list(client: TestClient, world: World, who: str, project: str, status: int) -> None:
    r = call(client, "GET", f"/projects/{getattr(world, project)}/patients", who)
    assert r.status_code == status, r.text


# --- read by id and by UUID -------------------------------------------------


def test_read_by_id_and_uuid(client: TestClient, world: World) -> None:
    created = new_patient(client, world.trial, "P1", sex="O")
    by_id = call(client, "GET", f"/projects/{world.trial}/patients/{created['id']}", "viewer")
    by_uuid = call(client, "GET", f"/projects/{world.trial}/patients/uuid/{created['uuid']}", "viewer")
    assert ok(by_id) == ok(by_uuid) == created
    assert by_id.headers["ETag"] == by_uuid.headers["ETag"]


def test_subproject_patient_is_visible_from_the_parent_not_the_other_way(
    client: TestClient, world: World
) -> None:
    in_site = new_patient(client, world.site, "S1")
    in_trial = new_patient(client, world.trial, "T1")
    for path in (f"/patients/{in_site['id']}", f"/patients/uuid/{in_site['uuid']}"):
        assert ok(call(client, "GET", f"/projects/{world.trial}" + path, "viewer"))["id"] == in_site["id"]
        assert ok(call(client, "GET", f"/projects/{world.site}" + path, "site_user"))["id"] == in_site["id"]
    for path in (f"/patients/{in_trial['id']}", f"/patients/uuid/{in_trial['uuid']}"):
        # Even the administrator, who can read both projects, does not find it under the child.
        error(call(client, "GET", f"/projects/{world.site}" + path, "admin"), 404, "not_found")
        error(call(client, "GET", f"/projects/{world.site}" + path, "site_user"), 404, "not_found")
        error(call(client, "GET", f"/projects/{world.trial}" + path, "site_user"), 404, "not_found")


def test_read_hidden_or_missing_is_404(client: TestClient, world: World) -> None:
    created = new_patient(client, world.trial, "P1")
    elsewhere = new_patient(client, world.other, "O1", who="outsider")
    for path in (f"/patients/{created['id']}", f"/patients/uuid/{created['uuid']}"):
        error(call(client, "GET", f"/projects/{world.trial}" + path, "outsider"), 404, "not_found")
        error(call(client, "GET", f"/projects/{world.other}" + path, "outsider"), 404, "not_found")
    error(
        call(client, "GET", f"/projects/{world.trial}/patients/{elsewhere['id']}", "admin"), 404, "not_found"
    )
    error(call(client, "GET", f"/projects/{world.trial}/patients/{MISSING}", "admin"), 404, "not_found")
    missing_uuid = "00000000-0000-4000-8000-000000000000"
    error(
        call(client, "GET", f"/projects/{world.trial}/patients/uuid/{missing_uuid}", "admin"),
        404,
        "not_found",
    )
    error(
        call(client, "GET", f"/projects/{world.trial}/patients/uuid/not-a-uuid", "admin"),
        400,
        "invalid_request",
    )


# --- update by id and by UUID -----------------------------------------------

BY = ("id", "uuid")


def _path(world: World, patient: dict[str, Any], by: str, project: int | None = None) -> str:
    key = patient["id"] if by == "id" else f"uuid/{patient['uuid']}"
    return f"/projects/{project or world.trial}/patients/{key}"


@pytest.mark.parametrize("by", BY)
def test_update_is_partial_and_changes_the_etag(client: TestClient, world: World, by: str) -> None:
    created = new_patient(client, world.trial, "P1", patient_name="Doe^J", sex="M", birth_date="1970-01-01")
    etag = call(client, "GET", _path(world, created, by), "member").headers["ETag"]
    r = call(client, "PUT", _path(world, created, by), "member", json={"sex": "F", "patient_name": " Roe^J "})
    body = ok(r)
    assert (body["sex"], body["patient_name"], body["birth_date"], body["patient_id"]) == (
        "F",
        "Roe^J",
        "1970-01-01",
        "P1",
    )
    assert r.headers["ETag"] != etag
    assert body["updated_at"] >= created["updated_at"]
    assert body["creator"]["username"] == "member"
    # null clears an optional field
    body = ok(call(client, "PUT", _path(world, created, by), "member", json={"patient_name": None}))
    assert body["patient_name"] is None and body["sex"] == "F"


@pytest.mark.parametrize("by", BY)
def test_update_with_if_match(client: TestClient, world: World, by: str) -> None:
    created = new_patient(client, world.trial, "P1")
    etag = call(client, "GET", _path(world, created, by), "member").headers["ETag"]
    r = call(
        client, "PUT", _path(world, created, by), "member", json={"sex": "M"}, headers={"If-Match": etag}
    )
    new_etag = ok(r) and r.headers["ETag"]
    # The old ETag no longer matches: 412 and nothing changes.
    r = call(
        client, "PUT", _path(world, created, by), "member", json={"sex": "F"}, headers={"If-Match": etag}
    )
    error(r, 412, "precondition_failed")
    assert ok(call(client, "GET", _path(world, created, by), "member"))["sex"] == "M"
    r = call(
        client, "PUT", _path(world, created, by), "member", json={"sex": "F"}, headers={"If-Match": new_etag}
    )
    assert ok(r)["sex"] == "F"
    r = call(client, "PUT", _path(world, created, by), "member", json={"sex": "O"}, headers={"If-Match": "*"})
    assert ok(r)["sex"] == "O"


@pytest.mark.parametrize("by", BY)
def test_update_validation(client: TestClient, world: World, by: str) -> None:
    created = new_patient(client, world.trial, "P1")
    tomorrow = (clock.now().date() + timedelta(days=1)).isoformat()
    for body, field in [
        ({"sex": "U"}, "sex"),
        ({"birth_date": "2023-02-29"}, "birth_date"),
        ({"birth_date": tomorrow}, "birth_date"),
        ({"patient_id": "X" * 65}, "patient_id"),
        ({"patient_id": "  "}, "patient_id"),
        ({"patient_id": None}, "patient_id"),  # the identifier cannot be removed
        ({"uuid": created["uuid"]}, "uuid"),
        ({"creator": None}, "creator"),
    ]:
        r = call(client, "PUT", _path(world, created, by), "member", json=body)
        assert fields_of(error(r, 400, "invalid_request")) == {field}, body
    assert ok(call(client, "GET", _path(world, created, by), "member")) == created


@pytest.mark.parametrize("by", BY)
def test_update_to_a_taken_patient_id_is_409(client: TestClient, world: World, by: str) -> None:
    created = new_patient(client, world.trial, "P1")
    new_patient(client, world.trial, "P2")
    error(
        call(client, "PUT", _path(world, created, by), "member", json={"patient_id": "P2"}), 409, "conflict"
    )
    # Its own identifier is not a conflict, and a free one is taken.
    assert (
        ok(call(client, "PUT", _path(world, created, by), "member", json={"patient_id": "P1"}))["patient_id"]
        == "P1"
    )
    assert (
        ok(call(client, "PUT", _path(world, created, by), "member", json={"patient_id": "P3"}))["patient_id"]
        == "P3"
    )


@pytest.mark.parametrize("by", BY)
@pytest.mark.parametrize(
    ("who", "home", "route", "status"),
    [
        ("member", "trial", "trial", 200),
        ("manager", "trial", "trial", 200),
        ("admin", "site", "trial", 200),
        ("site_user", "site", "site", 200),
        ("site_user", "site", "trial", 404),  # no role on the route's project
        ("viewer", "trial", "trial", 403),
        ("viewer", "site", "trial", 403),
        ("outsider", "trial", "trial", 404),
        ("outsider", "trial", "other", 404),  # its own project, but the patient is not there
        ("admin", "trial", "site", 404),  # a parent's patient is not under the child
    ],
)
def test_who_may_update(
    client: TestClient, world: World, by: str, who: str, home: str, route: str, status: int
) -> None:
    created = new_patient(client, getattr(world, home), "P1", who="admin")
    r = call(client, "PUT", _path(world, created, by, getattr(world, route)), who, json={"sex": "F"})
    assert r.status_code == status, r.text
    expected = "F" if status == 200 else None
    assert ok(call(client, "GET", _path(world, created, by), "admin"))["sex"] == expected


def test_update_missing_patient_is_404(client: TestClient, world: World) -> None:
    error(
        call(client, "PUT", f"/projects/{world.trial}/patients/{MISSING}", "admin", json={}), 404, "not_found"
    )


def test_write_needs_user_on_the_patients_project_not_on_the_route(
    client: TestClient, world: World, db: Session, settings: Settings
) -> None:
    """A viewer of Trial who is a user of Site changes Site's patients through either route."""
    mixed = make_user(db, settings, "mixed")
    for project_id, role in ((world.trial, "viewer"), (world.site, "user")):
        project = db.get(Project, project_id)
        assert project is not None
        grant(db, project, mixed, role)
    db.commit()
    in_site = new_patient(client, world.site, "S1")
    in_trial = new_patient(client, world.trial, "T1")
    for route in (world.trial, world.site):
        r = call(client, "PUT", f"/projects/{route}/patients/{in_site['id']}", "mixed", json={"sex": "F"})
        assert ok(r)["sex"] == "F"
    r = call(client, "PUT", f"/projects/{world.trial}/patients/{in_trial['id']}", "mixed", json={"sex": "F"})
    error(r, 403, "forbidden")
