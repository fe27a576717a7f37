"""HTTP upload: one file, a zip, multipart/related; bad files fail alone; limits, media types, permissions."""

from __future__ import annotations

import io
import uuid
import zipfile
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.db.engine import Database
from ipacs.dicom import ingest
from ipacs.models import Instance, Patient, Study
from tests.dicom.world import (
    MAX_INSTANCE_BYTES,
    MAX_UPLOAD_BYTES,
    World,
    call,
    count_rows,
    error,
    object_files,
    ok,
    study_route,
    upload,
    zip_of,
    zip_of_datasets,
)
from tests.dicom_factory import SeriesSpec, make_dataset, make_study, to_bytes

DICOM = "application/dicom"
ZIP = "application/zip"


def multipart_related(parts: list[bytes], boundary: str | None = None) -> tuple[bytes, str]:
    """A multipart/related body of application/dicom parts, and its Content-Type."""
    boundary = boundary or f"ipacs-{uuid.uuid4().hex}"
    body = io.BytesIO()
    for part in parts:
        body.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        body.write(part)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f'multipart/related; type="application/dicom"; boundary={boundary}'


def _study(db: Session, uid: str) -> Study:
    db.expire_all()
    study = db.scalars(select(Study).where(Study.study_instance_uid == uid)).one()
    db.commit()  # end the transaction: an open one would hold SQLite's write lock
    return study


def _archive(client: TestClient, db: Session, uid: str, who: str = "viewer") -> dict[str, bytes]:
    """The study's archive as {SOPInstanceUID: file bytes}."""
    project_id, patient_pk, study_pk = study_route(db, uid)
    r = call(client, "GET", f"/projects/{project_id}/patients/{patient_pk}/studies/{study_pk}/archive", who)
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        return {name.rsplit("/", 1)[-1].removesuffix(".dcm"): zf.read(name) for name in zf.namelist()}


def _assert_counts(db: Session, datasets: list[Dataset], files: list[bytes]) -> None:
    study = _study(db, datasets[0].StudyInstanceUID)
    assert study.instance_count == len(datasets)
    assert study.series_count == len({ds.SeriesInstanceUID for ds in datasets})
    assert sorted(study.modalities.split("\\")) == sorted({ds.Modality for ds in datasets})
    assert study.size_bytes == sum(len(f) for f in files)


# --- the three media types ---------------------------------------------------------


def test_single_file_is_stored_and_comes_back_byte_identical(
    client: TestClient, world: World, db: Session
) -> None:
    ds = make_dataset(patient_id="SOLO")
    data = to_bytes(ds)
    summary = ok(upload(client, world.trial, data, DICOM))
    study = _study(db, ds.StudyInstanceUID)
    assert summary == {
        "stored": 1,
        "duplicates": 0,
        "failed": [],
        "studies": [{"id": study.id, "uuid": str(study.uuid), "study_instance_uid": ds.StudyInstanceUID}],
    }
    _assert_counts(db, [ds], [data])
    patient = db.get(Patient, study.patient_id)
    db.commit()
    assert patient is not None
    assert (patient.patient_id, patient.project_id, patient.patient_name) == ("SOLO", world.trial, "Doe^Jane")
    assert study.accession_number == "ACC1" and str(study.study_date) == "2024-01-02"
    assert _archive(client, db, ds.StudyInstanceUID) == {ds.SOPInstanceUID: data}


@pytest.mark.parametrize("registered_first", ["patient", "study"])
def test_a_patient_or_study_registered_by_another_writer_meanwhile_is_used(
    client: TestClient, world: World, db: Session, monkeypatch: pytest.MonkeyPatch, registered_first: str
) -> None:
    """On PostgreSQL a concurrent upload can commit the same new patient (or study) between
    ingest's lookup and the registering service's own check: the ingest retries and uses it
    instead of reporting a conflict. The other writer is played by the same transaction
    creating the row just before the service looks (the attempt then rolls it back)."""
    name = f"register_{registered_first}"
    real = getattr(ingest, name)
    raced: list[bool] = []

    def racing(session: Session, actor: Any, parent: Any, data: Any, **kwargs: Any) -> Any:
        if not raced:
            raced.append(True)
            real(session, actor, parent, data, **kwargs)  # "the other writer"
        return real(session, actor, parent, data, **kwargs)

    monkeypatch.setattr(ingest, name, racing)
    ds = make_dataset(patient_id="RACED")
    summary = ok(upload(client, world.trial, to_bytes(ds), DICOM))
    assert (summary["stored"], summary["failed"]) == (1, []) and raced == [True]
    study = _study(db, ds.StudyInstanceUID)
    assert db.scalar(select(func.count()).select_from(Patient).where(Patient.patient_id == "RACED")) == 1
    assert study.instance_count == 1
    db.commit()


def test_zip_of_a_multi_series_study(client: TestClient, world: World, db: Session) -> None:
    datasets = make_study("Z1", [SeriesSpec("MR", 1, 3), SeriesSpec("CT", 2, 2), SeriesSpec("MR", 3, 1)])
    files = [to_bytes(ds) for ds in datasets]
    body = zip_of((f"dir/{i}.dcm", f) for i, f in enumerate(files))
    summary = ok(upload(client, world.trial, body, ZIP))
    assert (summary["stored"], summary["duplicates"], summary["failed"]) == (6, 0, [])
    assert [s["study_instance_uid"] for s in summary["studies"]] == [datasets[0].StudyInstanceUID]
    _assert_counts(db, datasets, files)
    assert _archive(client, db, datasets[0].StudyInstanceUID) == {
        ds.SOPInstanceUID: f for ds, f in zip(datasets, files, strict=True)
    }


def test_a_stored_zip_is_read_too(client: TestClient, world: World, db: Session) -> None:
    datasets = make_study("Z2")
    summary = ok(
        upload(
            client,
            world.trial,
            zip_of(((str(i), to_bytes(d)) for i, d in enumerate(datasets)), zipfile.ZIP_STORED),
            "application/x-zip-compressed",
        )
    )
    assert summary["stored"] == len(datasets)


def test_multipart_related(client: TestClient, world: World, db: Session) -> None:
    datasets = make_study("M1", [SeriesSpec("MR", 1, 2), SeriesSpec("US", 2, 2)])
    files = [to_bytes(ds) for ds in datasets]
    body, content_type = multipart_related(files)
    summary = ok(upload(client, world.trial, body, content_type))
    assert (summary["stored"], summary["failed"]) == (4, [])
    _assert_counts(db, datasets, files)
    assert _archive(client, db, datasets[0].StudyInstanceUID) == {
        ds.SOPInstanceUID: f for ds, f in zip(datasets, files, strict=True)
    }


def test_multipart_with_a_quoted_boundary_and_no_type(client: TestClient, world: World) -> None:
    ds = make_dataset(patient_id="M2")
    body, _ = multipart_related([to_bytes(ds)], boundary="a'b(c)d")
    summary = ok(upload(client, world.trial, body, 'multipart/related; boundary="a\'b(c)d"'))
    assert summary["stored"] == 1


def test_one_upload_touching_several_studies_and_patients(client: TestClient, world: World) -> None:
    a, b = make_study("A", [SeriesSpec("MR", 1, 2)]), make_study("B", [SeriesSpec("CT", 1, 1)])
    summary = ok(upload(client, world.trial, zip_of_datasets(a + b), ZIP))
    assert summary["stored"] == 3
    assert {s["study_instance_uid"] for s in summary["studies"]} == {
        a[0].StudyInstanceUID,
        b[0].StudyInstanceUID,
    }


def test_an_existing_patient_is_matched_by_patient_id(client: TestClient, world: World, db: Session) -> None:
    patient = ok(
        call(client, "POST", f"/projects/{world.trial}/patients", "member", json={"patient_id": "KNOWN"}), 201
    )
    ds = make_dataset(patient_id="KNOWN")
    ok(upload(client, world.trial, to_bytes(ds), DICOM))
    assert _study(db, ds.StudyInstanceUID).patient_id == patient["id"]
    # The same PatientID in another project is another patient.
    other = make_dataset(patient_id="KNOWN")
    ok(upload(client, world.other, to_bytes(other), DICOM, who="outsider"))
    assert _study(db, other.StudyInstanceUID).patient_id != patient["id"]


# --- a bad file fails alone -----------------------------------------------------------


def test_a_corrupt_file_in_a_batch_fails_alone(client: TestClient, world: World, db: Session) -> None:
    datasets = make_study("C1", [SeriesSpec("MR", 1, 3)])
    good = [(f"good{i}.dcm", to_bytes(ds)) for i, ds in enumerate(datasets)]
    truncated = to_bytes(make_dataset(patient_id="C1"))[:200]
    body = zip_of(
        [
            good[0],
            ("bad/garbage.dcm", b"this is not DICOM"),
            good[1],
            ("bad/truncated.dcm", truncated),
            good[2],
        ]
    )
    summary = ok(upload(client, world.trial, body, ZIP))
    assert summary["stored"] == 3
    failed = {f["name"]: f["reason"] for f in summary["failed"]}
    assert set(failed) == {"bad/garbage.dcm", "bad/truncated.dcm"}
    assert "not a DICOM" in failed["bad/garbage.dcm"]
    assert _study(db, datasets[0].StudyInstanceUID).instance_count == 3


def test_a_corrupt_part_in_multipart_fails_alone(client: TestClient, world: World) -> None:
    good = to_bytes(make_dataset(patient_id="C2"))
    body, content_type = multipart_related([b"garbage", good])
    summary = ok(upload(client, world.trial, body, content_type))
    assert summary["stored"] == 1
    assert [f["name"] for f in summary["failed"]] == ["part 1"]


def test_a_single_bad_file_is_reported_not_an_error(
    client: TestClient, world: World, database: Database
) -> None:
    summary = ok(upload(client, world.trial, b"\x00" * 300, DICOM))
    assert summary["stored"] == 0 and summary["failed"][0]["name"] == "upload"
    assert count_rows(database, Instance) == 0


def test_missing_required_tags_are_named(client: TestClient, world: World) -> None:
    body = zip_of(
        [
            ("no-patient.dcm", to_bytes(make_dataset(omit=("PatientID",)))),
            ("no-series.dcm", to_bytes(make_dataset(omit=("SeriesInstanceUID", "StudyInstanceUID")))),
        ]
    )
    failed = {f["name"]: f["reason"] for f in ok(upload(client, world.trial, body, ZIP))["failed"]}
    assert failed["no-patient.dcm"] == "missing required DICOM attributes: PatientID"
    assert failed["no-series.dcm"] == "missing required DICOM attributes: StudyInstanceUID, SeriesInstanceUID"


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"patient_id": "A\r\nB"}, "PatientID is longer than 64 characters or holds a backslash or control"),
        ({"patient_id": "A\\B"}, "PatientID is longer than 64 characters or holds a backslash or control"),
        ({"study_uid": "1.2.abc"}, "StudyInstanceUID '1.2.abc' is not a valid UID"),
        ({"study_uid": "1.02.3"}, "StudyInstanceUID '1.02.3' is not a valid UID"),
        ({"study_uid": "1." + "2" * 70}, "StudyInstanceUID is longer than 64 characters"),
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI", "ignore:The value length")
def test_unacceptable_identifiers_are_refused_with_a_reason(
    client: TestClient, world: World, database: Database, attributes: dict[str, str], reason: str
) -> None:
    good = to_bytes(make_dataset(patient_id="FINE"))
    bad = to_bytes(make_dataset(**attributes))  # type: ignore[arg-type]
    summary = ok(upload(client, world.trial, zip_of([("bad.dcm", bad), ("good.dcm", good)]), ZIP))
    assert summary["stored"] == 1
    assert [f["name"] for f in summary["failed"]] == ["bad.dcm"]
    assert summary["failed"][0]["reason"].startswith(reason)
    assert count_rows(database, Instance) == 1


def test_not_a_zip(client: TestClient, world: World) -> None:
    summary = ok(upload(client, world.trial, b"PK\x03\x04 but not really a zip", ZIP))
    assert summary["stored"] == 0 and summary["failed"][0]["reason"] == "not a valid zip archive"


# --- duplicates and conflicts ------------------------------------------------------------


def test_an_identical_resend_is_a_duplicate_that_changes_nothing(
    client: TestClient, world: World, db: Session, settings: Settings
) -> None:
    datasets = make_study("D1")
    body = zip_of_datasets(datasets)
    ok(upload(client, world.trial, body, ZIP))
    before = _study(db, datasets[0].StudyInstanceUID)
    counts = (before.instance_count, before.series_count, before.size_bytes, before.version)
    files = object_files(settings.data_dir)
    summary = ok(upload(client, world.trial, body, ZIP))
    assert (summary["stored"], summary["duplicates"], summary["failed"]) == (0, len(datasets), [])
    assert [s["id"] for s in summary["studies"]] == [before.id]
    after = _study(db, datasets[0].StudyInstanceUID)
    assert (after.instance_count, after.series_count, after.size_bytes, after.version) == counts
    assert object_files(settings.data_dir) == files


def test_same_sop_instance_uid_with_other_bytes_is_refused_and_the_original_kept(
    client: TestClient, world: World, db: Session
) -> None:
    original = make_dataset(patient_id="K1")
    first = to_bytes(original)
    ok(upload(client, world.trial, first, DICOM))
    changed = make_dataset(
        patient_id="K1",
        study_uid=original.StudyInstanceUID,
        series_uid=original.SeriesInstanceUID,
        sop_uid=original.SOPInstanceUID,
        instance_number=7,
    )
    summary = ok(upload(client, world.trial, to_bytes(changed), DICOM))
    assert summary["stored"] == 0 and summary["duplicates"] == 0
    reason = summary["failed"][0]["reason"]
    assert original.SOPInstanceUID in reason and reason.startswith("Different content already stored")
    assert _archive(client, db, original.StudyInstanceUID) == {original.SOPInstanceUID: first}
    assert _study(db, original.StudyInstanceUID).instance_count == 1


def test_a_study_uid_of_another_patient_is_refused(client: TestClient, world: World, db: Session) -> None:
    first = make_dataset(patient_id="OWNER")
    ok(upload(client, world.trial, to_bytes(first), DICOM))
    intruder = make_dataset(patient_id="INTRUDER", study_uid=first.StudyInstanceUID)
    summary = ok(upload(client, world.trial, to_bytes(intruder), DICOM))
    assert summary["stored"] == 0
    assert "Belongs to another patient" in summary["failed"][0]["reason"]
    assert _study(db, first.StudyInstanceUID).instance_count == 1
    db.expire_all()
    # Nothing of the refused file stays behind, not even its new patient.
    assert db.scalars(select(Patient).where(Patient.patient_id == "INTRUDER")).first() is None
    db.commit()


def test_a_study_uid_of_another_project_is_refused(client: TestClient, world: World, db: Session) -> None:
    first = make_dataset(patient_id="P")
    ok(upload(client, world.trial, to_bytes(first), DICOM))
    again = make_dataset(patient_id="P", study_uid=first.StudyInstanceUID)
    summary = ok(upload(client, world.other, to_bytes(again), DICOM, who="outsider"))
    assert summary["stored"] == 0 and summary["studies"] == []
    assert "another patient or project" in summary["failed"][0]["reason"]


def test_a_file_stored_in_another_project_is_not_reported_as_our_duplicate(
    client: TestClient, world: World, db: Session
) -> None:
    ds = make_dataset(patient_id="SECRET")
    data = to_bytes(ds)
    ok(upload(client, world.trial, data, DICOM))
    summary = ok(upload(client, world.other, data, DICOM, who="outsider"))
    # The outsider learns nothing of the Trial's study: no id, no uuid.
    assert summary["stored"] == 0 and summary["duplicates"] == 0 and summary["studies"] == []
    assert "another project" in summary["failed"][0]["reason"]


def test_a_duplicate_in_a_subproject_is_a_duplicate_through_the_parent(
    client: TestClient, world: World
) -> None:
    ds = make_dataset(patient_id="S")
    data = to_bytes(ds)
    ok(upload(client, world.site, data, DICOM))
    summary = ok(upload(client, world.trial, data, DICOM))
    assert (summary["stored"], summary["duplicates"], summary["failed"]) == (0, 1, [])


# --- unsafe zips ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../evil.dcm", "a/../../evil.dcm", "/etc/evil.dcm", "..\\evil.dcm", "C:/evil.dcm", "C:\\evil.dcm"],
)
def test_zip_members_with_path_tricks_are_refused_one_by_one(
    client: TestClient, world: World, settings: Settings, name: str
) -> None:
    good = make_dataset(patient_id="Z")
    body = zip_of([(name, to_bytes(make_dataset(patient_id="Z"))), ("fine/ok.dcm", to_bytes(good))])
    summary = ok(upload(client, world.trial, body, ZIP))
    assert summary["stored"] == 1
    assert [f["name"] for f in summary["failed"]] == [name]
    assert "unsafe path" in summary["failed"][0]["reason"]
    assert (
        not (settings.data_dir / "evil.dcm").exists() and not (settings.data_dir.parent / "evil.dcm").exists()
    )


def test_a_zip_bomb_member_is_refused(client: TestClient, world: World, database: Database) -> None:
    # 60 KiB of zeros deflate to a few hundred bytes: a compression ratio far above 200:1.
    bomb = b"\x00" * (60 * 1024)
    body = zip_of([("bomb.bin", bomb), ("ok.dcm", to_bytes(make_dataset(patient_id="B")))])
    summary = ok(upload(client, world.trial, body, ZIP))
    assert summary["stored"] == 1
    assert summary["failed"][0]["name"] == "bomb.bin"
    assert "zip bomb" in summary["failed"][0]["reason"]


def test_a_zip_member_larger_than_the_instance_limit_is_refused(client: TestClient, world: World) -> None:
    big = make_dataset(patient_id="BIG", rows=256, columns=256)  # 128 KiB of pixels
    body = zip_of([("big.dcm", to_bytes(big))], zipfile.ZIP_STORED)
    summary = ok(upload(client, world.trial, body, ZIP))
    assert summary["stored"] == 0
    assert summary["failed"][0]["reason"] == f"file larger than {MAX_INSTANCE_BYTES} bytes"


# --- limits and media types ---------------------------------------------------------------------


def test_413_when_a_single_file_is_over_the_instance_limit(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    big = to_bytes(make_dataset(rows=256, columns=256))
    assert len(big) > MAX_INSTANCE_BYTES
    error(upload(client, world.trial, big, DICOM), 413, "payload_too_large")
    assert count_rows(database, Instance) == 0
    assert list((settings.data_dir / "store" / "tmp").iterdir()) == []


def test_413_when_a_zip_is_over_the_upload_limit(
    client: TestClient, world: World, settings: Settings
) -> None:
    body = zip_of([(f"{i}", uuid.uuid4().bytes * 2048) for i in range(20)], zipfile.ZIP_STORED)
    assert len(body) > MAX_UPLOAD_BYTES
    error(upload(client, world.trial, body, ZIP), 413, "payload_too_large")
    assert list((settings.data_dir / "store" / "tmp").iterdir()) == []


def test_413_when_multipart_is_over_a_limit(client: TestClient, world: World, settings: Settings) -> None:
    body, content_type = multipart_related([b"x" * (MAX_UPLOAD_BYTES + 1)])
    error(upload(client, world.trial, body, content_type), 413, "payload_too_large")
    body, content_type = multipart_related([b"x" * (MAX_INSTANCE_BYTES + 1)])
    error(upload(client, world.trial, body, content_type), 413, "payload_too_large")
    assert list((settings.data_dir / "store" / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/json",
        "application/octet-stream",
        "multipart/form-data; boundary=x",
        'multipart/related; type="application/json"; boundary=x',
        None,
    ],
)
def test_415_for_other_content_types(
    client: TestClient, world: World, database: Database, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = call(
        client,
        "POST",
        f"/projects/{world.trial}/dicom",
        "member",
        content=to_bytes(make_dataset()),
        headers=headers,
    )
    assert r.status_code == 415, r.text
    assert r.json()["success"] is False
    assert count_rows(database, Instance) == 0


def test_multipart_without_a_boundary(client: TestClient, world: World) -> None:
    r = upload(client, world.trial, b"whatever", 'multipart/related; type="application/dicom"')
    assert r.status_code == 415, r.text


# --- permissions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "status", "code"),
    [("viewer", 403, "forbidden"), ("outsider", 404, "not_found"), (None, 401, "unauthorized")],
)
def test_upload_needs_the_user_role(
    client: TestClient, world: World, database: Database, who: str | None, status: int, code: str
) -> None:
    error(upload(client, world.trial, to_bytes(make_dataset()), DICOM, who=who), status, code)
    assert count_rows(database, Instance) == 0


def test_upload_to_a_missing_project_is_404(client: TestClient, world: World) -> None:
    error(upload(client, 987654, to_bytes(make_dataset()), DICOM, who="admin"), 404, "not_found")


def test_a_user_of_the_parent_uploads_into_the_subproject(
    client: TestClient, world: World, db: Session
) -> None:
    ds = make_dataset(patient_id="SUB")
    ok(upload(client, world.site, to_bytes(ds), DICOM, who="member"))
    assert _study(db, ds.StudyInstanceUID).project_id == world.site


def test_the_uploader_is_the_creator_and_in_the_audit_log(
    client: TestClient, world: World, db: Session
) -> None:
    ds = make_dataset(patient_id="WHO")
    ok(upload(client, world.trial, to_bytes(ds), DICOM, who="member"))
    patients = ok(call(client, "GET", f"/projects/{world.trial}/patients?patient_id=WHO", "viewer"))
    assert patients[0]["creator"]["username"] == "member"
    studies = ok(
        call(client, "GET", f"/projects/{world.trial}/patients/{patients[0]['id']}/studies", "viewer")
    )
    assert studies[0]["creator"]["username"] == "member"
    events = ok(call(client, "GET", f"/projects/{world.trial}/audit?limit=1000", "manager"))
    done = {(e["action"], e["entity_type"]): e for e in events}
    assert {
        key: done[key]["username"]
        for key in [("create", "patient"), ("create", "study"), ("receive", "study")]
    } == {
        ("create", "patient"): "member",
        ("create", "study"): "member",
        ("receive", "study"): "member",
    }
    assert done[("receive", "study")]["after"] == {"source": "http upload"}
