"""GET …/studies/{id}/series and …/studies/{id}/archive: contents, names, permissions."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from tests.dicom.world import World, call, error, ok, study_route, upload, zip_of_datasets
from tests.dicom_factory import SeriesSpec, make_dataset, make_study, to_bytes


def _stored_study(
    client: TestClient, db: Session, world: World, patient_id: str = "P001"
) -> tuple[str, list[Dataset]]:
    datasets = make_study(patient_id, [SeriesSpec("MR", 2, 3), SeriesSpec("CT", 1, 2)])
    ok(upload(client, world.trial, zip_of_datasets(datasets), "application/zip"))
    project_id, patient_pk, study_pk = study_route(db, datasets[0].StudyInstanceUID)
    return f"/projects/{project_id}/patients/{patient_pk}/studies/{study_pk}", datasets


def test_series_of_a_study(client: TestClient, world: World, db: Session) -> None:
    path, datasets = _stored_study(client, db, world)
    r = call(client, "GET", f"{path}/series", "viewer")
    series = ok(r)
    assert r.headers["X-Total-Count"] == "2"
    by_uid = {s["series_instance_uid"]: s for s in series}
    for ds in datasets:
        entry = by_uid[ds.SeriesInstanceUID]
        assert (entry["modality"], entry["series_number"]) == (ds.Modality, ds.SeriesNumber)
        assert entry["series_description"] == ds.SeriesDescription
    assert sorted((s["modality"], s["instance_count"]) for s in series) == [("CT", 2), ("MR", 3)]
    sizes = {uid: sum(len(to_bytes(ds)) for ds in datasets if ds.SeriesInstanceUID == uid) for uid in by_uid}
    assert {uid: s["size_bytes"] for uid, s in by_uid.items()} == sizes


def test_series_are_paged(client: TestClient, world: World, db: Session) -> None:
    path, _ = _stored_study(client, db, world)
    r = call(client, "GET", f"{path}/series?limit=1", "viewer")
    assert len(ok(r)) == 1 and r.headers["X-Total-Count"] == "2"
    assert 'rel="next"' in r.headers["Link"]


def test_a_study_without_images_has_no_series_and_an_empty_archive(client: TestClient, world: World) -> None:
    patient = ok(
        call(client, "POST", f"/projects/{world.trial}/patients", "member", json={"patient_id": "E"}), 201
    )
    base = f"/projects/{world.trial}/patients/{patient['id']}/studies"
    study = ok(call(client, "POST", base, "member", json={}), 201)
    assert ok(call(client, "GET", f"{base}/{study['id']}/series", "viewer")) == []
    r = call(client, "GET", f"{base}/{study['id']}/archive", "viewer")
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.namelist() == []


def test_archive_holds_every_file_byte_for_byte_in_named_folders(
    client: TestClient, world: World, db: Session
) -> None:
    path, datasets = _stored_study(client, db, world)
    r = call(client, "GET", f"{path}/archive", "viewer")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/zip"
    uid = datasets[0].StudyInstanceUID
    assert r.headers["Content-Disposition"] == f'attachment; filename="P001_{uid}.zip"'
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        contents = {name: zf.read(name) for name in names}
        # Each member carries the time it was stored (UTC), not zip's 1980 default.
        now = datetime.now(UTC)
        for info in zf.infolist():
            assert now - datetime(*info.date_time, tzinfo=UTC) < timedelta(minutes=10)
    expected = {}
    for ds in datasets:
        folder = f"{ds.SeriesNumber:03d}_{ds.Modality}_{ds.Modality}_series_{ds.SeriesNumber}"
        expected[f"P001/{uid}/{folder}/{ds.SOPInstanceUID}.dcm"] = to_bytes(ds)
    assert contents == expected
    # Series in series-number order, instances in instance-number order.
    in_order = sorted(datasets, key=lambda ds: (ds.SeriesNumber, ds.InstanceNumber))
    assert [n.rsplit("/", 1)[1] for n in names] == [f"{ds.SOPInstanceUID}.dcm" for ds in in_order]


@pytest.mark.parametrize(
    ("patient_id", "filename_start"),
    [
        ('../"evil" name', "evil_name_"),
        ("Müller/Ünal", "M_ller_nal_"),
        ("...", "patient_"),
    ],
)
def test_archive_file_name_is_safe(
    client: TestClient, world: World, db: Session, patient_id: str, filename_start: str
) -> None:
    ds = make_dataset(patient_id=patient_id)
    summary = ok(upload(client, world.trial, to_bytes(ds), "application/dicom"))
    assert summary["stored"] == 1, summary
    project_id, patient_pk, study_pk = study_route(db, ds.StudyInstanceUID)
    r = call(
        client, "GET", f"/projects/{project_id}/patients/{patient_pk}/studies/{study_pk}/archive", "viewer"
    )
    assert r.status_code == 200
    disposition = r.headers["Content-Disposition"]
    assert disposition == f'attachment; filename="{filename_start}{ds.StudyInstanceUID}.zip"'
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        for name in zf.namelist():
            parts = name.split("/")
            assert ".." not in parts and not name.startswith("/") and "\\" not in name


@pytest.mark.parametrize("endpoint", ["series", "archive"])
@pytest.mark.parametrize(
    ("who", "status", "code"),
    [
        ("viewer", 200, None),
        ("member", 200, None),
        ("outsider", 404, "not_found"),
        ("site_manager", 404, "not_found"),
        (None, 401, "unauthorized"),
    ],
)
def test_permissions(
    client: TestClient,
    world: World,
    db: Session,
    endpoint: str,
    who: str | None,
    status: int,
    code: str | None,
) -> None:
    path, _ = _stored_study(client, db, world)
    r = call(client, "GET", f"{path}/{endpoint}", who)
    if code is None:
        assert r.status_code == status
    else:
        error(r, status, code)


@pytest.mark.parametrize("endpoint", ["series", "archive"])
def test_a_study_seen_through_the_wrong_route_is_404(
    client: TestClient, world: World, db: Session, endpoint: str
) -> None:
    path, _ = _stored_study(client, db, world, "A")
    other_path, _ = _stored_study(client, db, world, "B")
    _, project_id, _, patient_a, _, study_a = path.split("/")[1:7]
    patient_b = other_path.split("/")[4]
    for wrong in (
        f"/projects/{project_id}/patients/{patient_b}/studies/{study_a}",
        f"/projects/{world.site}/patients/{patient_a}/studies/{study_a}",
        f"/projects/{world.other}/patients/{patient_a}/studies/{study_a}",
        f"/projects/{project_id}/patients/{patient_a}/studies/987654",
    ):
        error(call(client, "GET", f"{wrong}/{endpoint}", "admin"), 404, "not_found")
