"""A datapoint cannot be named like a keyword of the query language: no query could name it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from ipacs.config import Settings
from tests.factories import basic, make_project, make_user


@pytest.mark.parametrize("name", ["in", "AND", "Null", "contains", "true"])
def test_keyword_names_are_refused(client: TestClient, db: Session, settings: Settings, name: str) -> None:
    admin = make_user(db, settings, "root", is_admin=True)
    project = make_project(db, admin)
    db.commit()
    r = client.post(
        f"/api/v1.0/projects/{project.id}/datapoints",
        json={"name": name, "type": "integer"},
        headers=basic("root"),
    )
    assert r.status_code == 400
    assert r.json()["details"][0]["field"] == "name"
    ok = client.post(
        f"/api/v1.0/projects/{project.id}/datapoints",
        json={"name": f"{name}_x", "type": "integer"},
        headers=basic("root"),
    )
    assert ok.status_code == 201
