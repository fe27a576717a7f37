"""The world the security tests share: a project tree, every kind of caller, and data.

    Trial                  manager: parent_manager
      Cohort  <- target    viewer, user, manager; disabled (was manager); member (viewer)
        Arm                (a child of the target)
      Cohort B             manager: sibling_manager
    Other                  (a top-level project nobody but the admin sees)

The target holds a patient with a DICOM study (one instance), a datapoint
definition and a value. `no_role` is an active account without any role,
`disabled` a deactivated one, `admin` a system administrator, `newcomer` a
user the tests grant roles to.

The data is made through the HTTP API as the administrator, the way a client
would make it. The module-scoped `app` of these tests is built once and its
rows are removed when the module is done.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session

from ipacs.api.deps import get_db
from ipacs.app import create_app
from ipacs.config import Settings
from ipacs.db.engine import Database
from tests.conftest import CHEAP_ARGON2, _empty_all_tables
from tests.dicom_factory import make_dataset, to_bytes
from tests.factories import basic, grant, make_project, make_user

API = "/api/v1.0"
CALLERS = (
    "anonymous",
    "disabled",
    "no_role",
    "viewer",
    "user",
    "manager",
    "parent_manager",
    "sibling_manager",
    "admin",
)
ACCOUNTS = (*CALLERS[1:], "member", "newcomer")


@dataclass(frozen=True)
class World:
    target: int
    parent: int
    sibling: int
    child: int
    other: int
    patient: int
    patient_uuid: str
    patient_code: str
    study: int
    study_uid: str
    series_uid: str
    sop_uid: str
    datapoint: int
    # A second definition without a value, so that creating a value can succeed.
    unset_datapoint: int

    def fill(self, template: str) -> str:
        return template.format(
            project=self.target,
            patient=self.patient,
            patient_uuid=self.patient_uuid,
            study=self.study,
            datapoint=self.datapoint,
            unset_datapoint=self.unset_datapoint,
            study_uid=self.study_uid,
            series_uid=self.series_uid,
            sop_uid=self.sop_uid,
        )


def security_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        dicom_port=0,
        **CHEAP_ARGON2,  # type: ignore[arg-type]
        **overrides,
    )


def headers_of(caller: str) -> dict[str, str]:
    return {} if caller == "anonymous" else basic(caller)


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def build_world(client: TestClient, db: Session, settings: Settings) -> World:
    users = {name: make_user(db, settings, name, is_admin=name == "admin") for name in ACCOUNTS}
    admin = users["admin"]
    trial = make_project(db, admin, "Trial")
    target = make_project(db, admin, "Cohort", parent=trial)
    child = make_project(db, admin, "Arm", parent=target)
    sibling = make_project(db, admin, "Cohort B", parent=trial)
    other = make_project(db, admin, "Other")
    for name, role in (("viewer", "viewer"), ("user", "user"), ("manager", "manager")):
        grant(db, target, users[name], role)
    grant(db, target, users["disabled"], "manager")
    grant(db, target, users["member"], "viewer")
    grant(db, trial, users["parent_manager"], "manager")
    grant(db, sibling, users["sibling_manager"], "manager")
    users["disabled"].is_active = False
    db.commit()

    root = basic("admin")
    study_uid, series_uid, sop_uid = str(generate_uid()), str(generate_uid()), str(generate_uid())
    dicom = to_bytes(
        make_dataset(patient_id="P-1", study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
    )
    r = client.post(
        f"{API}/projects/{target.id}/dicom",
        content=dicom,
        headers={**root, "Content-Type": "application/dicom"},
    )
    assert _ok(r)["stored"] == 1, r.text
    patients = _ok(client.get(f"{API}/projects/{target.id}/patients", headers=root))
    patient = patients[0]
    studies = _ok(client.get(f"{API}/projects/{target.id}/patients/{patient['id']}/studies", headers=root))
    datapoint = _ok(
        client.post(
            f"{API}/projects/{target.id}/datapoints",
            json={"name": "age", "type": "integer", "minimum": 0, "maximum": 150},
            headers=root,
        ),
        201,
    )
    unset = _ok(
        client.post(
            f"{API}/projects/{target.id}/datapoints", json={"name": "weight", "type": "decimal"}, headers=root
        ),
        201,
    )
    _ok(
        client.post(
            f"{API}/projects/{target.id}/patients/{patient['id']}/datapoints",
            json={"datapoint_id": datapoint["id"], "value": 42},
            headers=root,
        ),
        201,
    )
    client.cookies.clear()
    return World(
        target=target.id,
        parent=trial.id,
        sibling=sibling.id,
        child=child.id,
        other=other.id,
        patient=patient["id"],
        patient_uuid=patient["uuid"],
        patient_code=patient["patient_id"],
        study=studies[0]["id"],
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        datapoint=datapoint["id"],
        unset_datapoint=unset["id"],
    )


def module_app(settings: Settings, database: Database) -> Iterator[FastAPI]:
    """An app for a whole test module; its rows are removed when the module is done."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield create_app(settings, database=database)
    finally:
        _empty_all_tables(database)


def roll_back_every_request(app: FastAPI) -> None:
    """Every request's transaction is rolled back instead of committed, so each caller
    meets the same world (statuses are decided before the commit)."""

    def session_rolled_back(request: Request) -> Iterator[Session]:
        database: Database = request.app.state.database
        with database.session(write=request.method not in ("GET", "HEAD")) as session:
            yield session
            session.rollback()

    app.dependency_overrides[get_db] = session_rolled_back
