"""Deleting studies, patients and projects: rows in the request's transaction, files after the commit."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.db.engine import Database
from ipacs.dicom.removal import StoredFile, remove_unreferenced
from ipacs.dicom.storage import FileStore
from ipacs.models import AuditEvent, DatapointValue, DatapointValueVersion, Instance, Patient, Series, Study
from tests.dicom.world import (
    World,
    call,
    count_rows,
    error,
    object_files,
    ok,
    study_route,
    upload_study,
)
from tests.dicom_factory import SeriesSpec, make_study


def _store(
    client: TestClient, project_id: int, patient_id: str = "P001", series: int = 2, who: str = "member"
) -> dict[str, Any]:
    """Upload a study; return its route and its storage keys."""
    specs = [SeriesSpec("MR" if n % 2 else "CT", n, instances=2) for n in range(1, series + 1)]
    datasets = make_study(patient_id, specs)
    upload_study(client, project_id, datasets, who)
    route = study_route_of(client, datasets[0].StudyInstanceUID)
    return {"uid": datasets[0].StudyInstanceUID, "route": route, "count": len(datasets)}


def study_route_of(client: TestClient, uid: str) -> tuple[int, int, int]:
    database: Database = client.app.state.database  # type: ignore[attr-defined]
    with database.session() as session:
        return study_route(session, uid)


def _keys_of_study(database: Database, study_pk: int) -> set[str]:
    with database.session() as session:
        return set(session.scalars(select(Instance.storage_key).where(Instance.study_id == study_pk)))


def _study_path(route: tuple[int, int, int], through: int | None = None) -> str:
    project_id, patient_pk, study_pk = route
    return f"/projects/{through or project_id}/patients/{patient_pk}/studies/{study_pk}"


def _audit(db: Session, entity_type: str) -> list[AuditEvent]:
    db.expire_all()
    events = list(
        db.scalars(
            select(AuditEvent).where(AuditEvent.entity_type == entity_type, AuditEvent.action == "delete")
        )
    )
    db.commit()  # end the transaction: an open one would hold SQLite's write lock
    return events


# --- studies -------------------------------------------------------------------


def test_manager_deletes_a_study_its_rows_and_files(
    client: TestClient, world: World, database: Database, settings: Settings, db: Session
) -> None:
    kept = _store(client, world.trial, "P001")
    gone = _store(client, world.trial, "P001")
    gone_keys = _keys_of_study(database, gone["route"][2])
    kept_keys = _keys_of_study(database, kept["route"][2])
    assert gone_keys and gone_keys <= object_files(settings.data_dir)

    r = call(client, "DELETE", _study_path(gone["route"]), "manager")
    assert ok(r)["success"] is True

    error(call(client, "GET", _study_path(gone["route"]), "manager"), 404, "not_found")
    assert _keys_of_study(database, gone["route"][2]) == set()
    with database.session() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(Series).where(Series.study_id == gone["route"][2])
            )
            == 0
        )
    files = object_files(settings.data_dir)
    assert not gone_keys & files
    assert kept_keys <= files
    # The patient and its other study are untouched.
    ok(call(client, "GET", _study_path(kept["route"]), "viewer"))
    events = _audit(db, "study")
    assert len(events) == 1
    event = events[0]
    assert (event.entity_id, event.username, event.project_id) == (gone["route"][2], "manager", world.trial)
    assert event.before is not None and event.before["study_instance_uid"] == gone["uid"]
    assert event.after == {
        "deleted": {
            "studies": 1,
            "series": 2,
            "instances": 4,
            "size_bytes": event.after["deleted"]["size_bytes"],
        }
    }
    assert event.after["deleted"]["size_bytes"] > 0


def test_a_study_without_images_is_deleted(client: TestClient, world: World) -> None:
    patient = ok(
        call(client, "POST", f"/projects/{world.trial}/patients", "member", json={"patient_id": "X"}), 201
    )
    study = ok(
        call(client, "POST", f"/projects/{world.trial}/patients/{patient['id']}/studies", "member", json={}),
        201,
    )
    path = f"/projects/{world.trial}/patients/{patient['id']}/studies/{study['id']}"
    ok(call(client, "DELETE", path, "manager"))
    error(call(client, "GET", path, "manager"), 404, "not_found")


@pytest.mark.parametrize(
    ("who", "status", "code"),
    [
        ("member", 403, "forbidden"),
        ("viewer", 403, "forbidden"),
        ("outsider", 404, "not_found"),
        ("site_manager", 404, "not_found"),
        (None, 401, "unauthorized"),
    ],
)
def test_deleting_a_study_needs_manager(
    client: TestClient, world: World, database: Database, who: str | None, status: int, code: str
) -> None:
    stored = _store(client, world.trial)
    error(call(client, "DELETE", _study_path(stored["route"]), who), status, code)
    assert count_rows(database, Instance) == stored["count"]


def test_a_manager_of_a_subproject_deletes_its_studies(client: TestClient, world: World) -> None:
    stored = _store(client, world.site)
    # Through the parent's route the site manager sees nothing; through its own it may delete.
    error(call(client, "DELETE", _study_path(stored["route"], world.trial), "site_manager"), 404, "not_found")
    ok(call(client, "DELETE", _study_path(stored["route"], world.site), "site_manager"))


def test_study_of_another_patient_or_route_is_404(
    client: TestClient, world: World, database: Database
) -> None:
    a = _store(client, world.trial, "A")
    b = _store(client, world.trial, "B")
    project_id, _, study_pk = a["route"]
    wrong_patient = f"/projects/{project_id}/patients/{b['route'][1]}/studies/{study_pk}"
    error(call(client, "DELETE", wrong_patient, "manager"), 404, "not_found")
    error(call(client, "DELETE", _study_path(a["route"], world.other), "admin"), 404, "not_found")
    assert count_rows(database, Study) == 2


def test_delete_study_honours_if_match(client: TestClient, world: World, database: Database) -> None:
    stored = _store(client, world.trial)
    path = _study_path(stored["route"])
    etag = call(client, "GET", path, "manager").headers["ETag"]
    error(
        call(client, "DELETE", path, "manager", headers={"If-Match": '"0000.1"'}), 412, "precondition_failed"
    )
    assert count_rows(database, Instance) == stored["count"]
    ok(call(client, "DELETE", path, "manager", headers={"If-Match": etag}))
    assert count_rows(database, Instance) == 0


def test_a_study_can_be_stored_again_after_deletion(
    client: TestClient, world: World, settings: Settings
) -> None:
    specs = [SeriesSpec("MR", 1, instances=2)]
    datasets = make_study("P9", specs)
    upload_study(client, world.trial, datasets)
    route = study_route_of(client, datasets[0].StudyInstanceUID)
    ok(call(client, "DELETE", _study_path(route), "manager"))
    assert object_files(settings.data_dir) == set()
    summary = upload_study(client, world.trial, datasets)
    assert summary["duplicates"] == 0
    assert len(object_files(settings.data_dir)) == 2


# --- a file named by more than one row -------------------------------------------


def test_a_file_still_named_by_another_instance_is_kept(
    client: TestClient, world: World, database: Database, settings: Settings, db: Session
) -> None:
    first = _store(client, world.trial, "P1", series=1)
    second = _store(client, world.trial, "P2", series=1)
    # Content addressing: make an instance of the second study name a file of the first.
    db.expire_all()
    shared = db.scalars(select(Instance).where(Instance.study_id == first["route"][2])).first()
    other = db.scalars(select(Instance).where(Instance.study_id == second["route"][2])).first()
    assert shared is not None and other is not None
    orphaned_key = other.storage_key
    other.sha256, other.storage_key = shared.sha256, shared.storage_key
    db.commit()

    ok(call(client, "DELETE", _study_path(first["route"]), "manager"))
    files = object_files(settings.data_dir)
    assert shared.storage_key in files
    assert orphaned_key in files  # not ours to remove: its row was changed, not deleted

    ok(call(client, "DELETE", _study_path(second["route"]), "manager"))
    assert shared.storage_key not in object_files(settings.data_dir)


def test_remove_unreferenced_keeps_files_rows_still_name(
    world: World, client: TestClient, database: Database, settings: Settings
) -> None:
    # What protects a file when a delete rolls back: its rows are still there.
    stored = _store(client, world.trial, series=1)
    with database.session() as session:
        files = [StoredFile(s, k) for s, k in session.execute(select(Instance.sha256, Instance.storage_key))]
    storage = FileStore(settings.data_dir / "store")
    assert remove_unreferenced(database, storage, files) == 0
    assert {f.storage_key for f in files} <= object_files(settings.data_dir)
    assert len(files) == stored["count"]


# --- patients ------------------------------------------------------------------


def _values(client: TestClient, world: World, patient_pk: int) -> None:
    """A datapoint value with some history for the patient."""
    ok(
        call(
            client,
            "POST",
            f"/projects/{world.trial}/datapoints",
            "admin",
            json={"name": "weight", "type": "integer"},
        ),
        201,
    )
    path = f"/projects/{world.trial}/patients/{patient_pk}/datapoints"
    created = ok(call(client, "POST", path, "member", json={"datapoint_name": "weight", "value": 70}), 201)
    assert created["success"] is True
    values = ok(call(client, "GET", path, "member"))
    datapoint_id = values[0]["datapoint_id"]
    ok(call(client, "PUT", f"{path}/{datapoint_id}", "member", json={"value": 71}))


def test_manager_deletes_a_patient_with_studies_images_and_values(
    client: TestClient, world: World, database: Database, settings: Settings, db: Session
) -> None:
    one = _store(client, world.trial, "P1")
    two = _store(client, world.site, "P1")  # another patient P1, in the subproject
    three = _store(client, world.trial, "P1")  # a second study of the first P1
    assert one["route"][1] == three["route"][1] != two["route"][1]
    patient_pk = one["route"][1]
    _values(client, world, patient_pk)
    kept_keys = _keys_of_study(database, two["route"][2])
    etag = call(client, "GET", f"/projects/{world.trial}/patients/{patient_pk}", "manager").headers["ETag"]

    r = call(
        client,
        "DELETE",
        f"/projects/{world.trial}/patients/{patient_pk}",
        "manager",
        headers={"If-Match": etag},
    )
    assert ok(r)["success"] is True

    error(call(client, "GET", f"/projects/{world.trial}/patients/{patient_pk}", "manager"), 404, "not_found")
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Study).where(Study.patient_id == patient_pk)) == 0
    assert db.scalar(select(func.count()).select_from(DatapointValue)) == 0
    assert db.scalar(select(func.count()).select_from(DatapointValueVersion)) == 0
    db.commit()
    assert count_rows(database, Instance) == two["count"]
    assert count_rows(database, Series) == 2
    assert object_files(settings.data_dir) == kept_keys
    ok(call(client, "GET", _study_path(two["route"]), "manager"))

    events = _audit(db, "patient")
    assert len(events) == 1
    event = events[0]
    assert (event.entity_id, event.username, event.project_id) == (patient_pk, "manager", world.trial)
    assert event.before is not None and event.before["patient_id"] == "P1"
    assert event.after is not None
    deleted = event.after["deleted"]
    assert {k: deleted[k] for k in ("studies", "series", "instances", "datapoint_values")} == {
        "studies": 2,
        "series": 4,
        "instances": 8,
        "datapoint_values": 1,
    }
    assert sorted(event.after["study_instance_uids"]) == sorted([one["uid"], three["uid"]])


@pytest.mark.parametrize(
    ("who", "status", "code"),
    [
        ("member", 403, "forbidden"),
        ("viewer", 403, "forbidden"),
        ("outsider", 404, "not_found"),
        ("site_manager", 404, "not_found"),
        (None, 401, "unauthorized"),
    ],
)
def test_deleting_a_patient_needs_manager(
    client: TestClient, world: World, database: Database, who: str | None, status: int, code: str
) -> None:
    stored = _store(client, world.trial)
    error(call(client, "DELETE", f"/projects/{world.trial}/patients/{stored['route'][1]}", who), status, code)
    with database.session() as session:
        assert session.get(Patient, stored["route"][1]) is not None
    assert count_rows(database, Instance) == stored["count"]


def test_delete_patient_honours_if_match_and_route(
    client: TestClient, world: World, database: Database
) -> None:
    stored = _store(client, world.trial)
    patient_pk = stored["route"][1]
    path = f"/projects/{world.trial}/patients/{patient_pk}"
    error(
        call(client, "DELETE", path, "manager", headers={"If-Match": '"stale.1"'}), 412, "precondition_failed"
    )
    error(call(client, "DELETE", f"/projects/{world.other}/patients/{patient_pk}", "admin"), 404, "not_found")
    error(call(client, "DELETE", f"/projects/{world.trial}/patients/987654", "manager"), 404, "not_found")
    assert count_rows(database, Instance) == stored["count"]
    ok(call(client, "DELETE", path, "manager", headers={"If-Match": "*"}))
    assert count_rows(database, Instance) == 0


def test_a_site_manager_deletes_a_site_patient(client: TestClient, world: World, database: Database) -> None:
    stored = _store(client, world.site)
    path = f"/projects/{world.site}/patients/{stored['route'][1]}"
    ok(call(client, "DELETE", path, "site_manager"))
    assert count_rows(database, Study) == 0


# --- projects --------------------------------------------------------------------


def test_force_deleting_a_project_deletes_series_instances_and_files(
    client: TestClient, world: World, database: Database, settings: Settings, db: Session
) -> None:
    _store(client, world.site, "S1")
    _store(client, world.trial, "T1")
    kept = _store(client, world.other, "O1", series=1, who="outsider")
    kept_keys = _keys_of_study(database, kept["route"][2])
    error(call(client, "DELETE", f"/projects/{world.trial}", "admin"), 409, "conflict")
    r = call(client, "DELETE", f"/projects/{world.trial}?force=true", "admin")
    assert ok(r)["success"] is True
    assert count_rows(database, Study) == 1
    assert count_rows(database, Series) == 1
    assert count_rows(database, Instance) == kept["count"]
    assert object_files(settings.data_dir) == kept_keys
    events = _audit(db, "project")
    assert len(events) == 1 and events[0].after is not None
    deleted = events[0].after["deleted"]
    assert {k: deleted[k] for k in ("projects", "patients", "studies", "series", "instances")} == {
        "projects": 2,
        "patients": 2,
        "studies": 2,
        "series": 4,
        "instances": 8,
    }
