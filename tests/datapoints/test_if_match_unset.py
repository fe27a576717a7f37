"""If-Match on a value that was never set fails (RFC 9110), even with "*"."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from ipacs.config import Settings
from tests.factories import basic, make_project, make_user


@pytest.mark.parametrize("if_match", ["*", '"abc.1"'])
def test_if_match_on_an_unset_value_is_412(
    client: TestClient, db: Session, settings: Settings, if_match: str
) -> None:
    admin = make_user(db, settings, "root", is_admin=True)
    project = make_project(db, admin)
    db.commit()
    h = basic("root")
    dp = client.post(
        f"/api/v1.0/projects/{project.id}/datapoints", json={"name": "age", "type": "integer"}, headers=h
    )
    patient = client.post(f"/api/v1.0/projects/{project.id}/patients", json={"patient_id": "P1"}, headers=h)
    url = f"/api/v1.0/projects/{project.id}/patients/{patient.json()['id']}/datapoints/{dp.json()['id']}"
    r = client.put(url, json={"value": 3}, headers={**h, "If-Match": if_match})
    assert r.status_code == 412
    assert client.get(url, headers=h).json()["value"] is None
    assert client.put(url, json={"value": 3}, headers=h).status_code == 200
