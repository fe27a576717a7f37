"""Numbers past what the database holds answer 400, never 500 (path ids, paging, bodies)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from ipacs.config import Settings
from tests.factories import basic, make_project, make_user

HUGE = 2**63 + 5
BIG = 2**40


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", f"/api/v1.0/projects/{BIG}", None),
        ("GET", f"/api/v1.0/projects/{HUGE}", None),
        ("GET", f"/api/v1.0/projects/PID/patients/{BIG}", None),
        ("GET", f"/api/v1.0/projects?after={HUGE}", None),
        ("GET", f"/api/v1.0/projects?offset={HUGE}", None),
        ("POST", "/api/v1.0/projects", {"name": "x", "parent_id": BIG}),
        ("POST", "/api/v1.0/projects", {"name": "y", "parent_id": HUGE}),
    ],
)
def test_out_of_range_numbers_are_client_errors(
    client: TestClient, db: Session, settings: Settings, method: str, path: str, body: object
) -> None:
    admin = make_user(db, settings, "root", is_admin=True)
    project = make_project(db, admin)
    db.commit()
    r = client.request(method, path.replace("PID", str(project.id)), json=body, headers=basic("root"))
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["success"] is False
