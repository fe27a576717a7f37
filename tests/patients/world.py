"""The small world the patient, study and value tests share, and HTTP shortcuts.

    Trial                 manager: manager   user: member   viewer: viewer
      Site                user: site_user (no role on Trial)
    Other                 user: outsider (a sibling top-level project)

`admin` is a system administrator. Every helper goes through the HTTP API, so
what the tests arrange is made the way a client would make it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.models import Project, User
from tests.factories import basic, grant, make_project, make_user

API = "/api/v1.0"
MISSING = 987654  # an id nothing has
USERS = ("admin", "manager", "member", "viewer", "site_user", "outsider")


@dataclass(frozen=True)
class World:
    trial: int
    site: int
    other: int


def make_world(db: Session, settings: Settings) -> World:
    admin = make_user(db, settings, "admin", is_admin=True, full_name="Ada Admin")
    users = {name: make_user(db, settings, name) for name in USERS[1:]}
    trial = make_project(db, admin, "Trial")
    site = make_project(db, admin, "Site", parent=trial)
    other = make_project(db, admin, "Other")
    grant(db, trial, users["manager"], "manager")
    grant(db, trial, users["member"], "user")
    grant(db, trial, users["viewer"], "viewer")
    grant(db, site, users["site_user"], "user")
    grant(db, other, users["outsider"], "user")
    db.commit()
    return World(trial=trial.id, site=site.id, other=other.id)


def subproject(db: Session, parent_id: int, name: str) -> int:
    """A further subproject, made by the administrator."""
    parent = db.get(Project, parent_id)
    admin = db.scalars(select(User).where(User.username == "admin")).one()
    assert parent is not None
    project = make_project(db, admin, name, parent=parent)
    db.commit()
    return project.id


def call(client: TestClient, method: str, path: str, who: str, **kwargs: Any) -> Response:
    """One request as `who` (a fresh cookie jar, so no earlier caller's session leaks in)."""
    client.cookies.clear()
    headers = {**basic(who), **kwargs.pop("headers", {})}
    return client.request(method, API + path, headers=headers, **kwargs)


def ok(response: Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error(response: Response, status: int, code: str) -> dict[str, Any]:
    """Assert an `invalidRequest` body with this status and code; return it."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert body["error"] == code
    return body


def fields_of(body: dict[str, Any]) -> set[str]:
    return {d["field"] for d in body["details"]}


def new_patient(
    client: TestClient, project_id: int, patient_id: str, who: str = "member", **fields: Any
) -> Any:
    r = call(
        client, "POST", f"/projects/{project_id}/patients", who, json={"patient_id": patient_id, **fields}
    )
    return ok(r, 201)


def define(client: TestClient, project_id: int, name: str, dp_type: str, **fields: Any) -> int:
    """A datapoint definition, made by the administrator; returns its id."""
    body = {"name": name, "type": dp_type, **fields}
    r = call(client, "POST", f"/projects/{project_id}/datapoints", "admin", json=body)
    created: int = ok(r, 201)["id"]
    return created


def new_study(client: TestClient, route: int, patient_pk: int, who: str = "member", **fields: Any) -> Any:
    """A study record created through the route of project `route`; returns PostStudyResponse."""
    r = call(client, "POST", f"/projects/{route}/patients/{patient_pk}/studies", who, json=fields)
    return ok(r, 201)


def audit_events(client: TestClient, project_id: int, entity_type: str) -> list[dict[str, Any]]:
    r = call(client, "GET", f"/projects/{project_id}/audit?entity_type={entity_type}&limit=1000", "manager")
    events: list[dict[str, Any]] = ok(r)
    return events
