"""The C-STORE receiver, in-process on a free port, driven by a pynetdicom client over loopback."""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE, Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.db.engine import Database
from ipacs.dicom.ingest import IngestBatch, Ingestor, IngestResult
from ipacs.dicom.receiver import MAX_PDU_BYTES, Receiver
from ipacs.dicom.storage import FileStore
from ipacs.models import AuditEvent, Instance, Patient, Study
from tests.dicom.world import (
    MAX_INSTANCE_BYTES,
    World,
    call,
    count_rows,
    dataset_part,
    object_files,
    study_route,
)
from tests.dicom_factory import SeriesSpec, make_dataset, make_study, to_bytes

SUCCESS, DUPLICATE, PROCESSING_FAILURE, NOT_AUTHORIZED, CANNOT_UNDERSTAND, OUT_OF_RESOURCES = (
    0x0000,
    0x0111,
    0x0110,
    0x0124,
    0xC000,
    0xA700,
)


@contextmanager
def running_receiver(database: Database, settings: Settings, max_instance_bytes: int | None) -> Iterator[int]:
    storage = FileStore(settings.data_dir / "store")
    receiver = Receiver(database, storage, "IPACS", max_instance_bytes=max_instance_bytes)
    bound = receiver.start("127.0.0.1", 0)
    try:
        yield bound
    finally:
        receiver.stop()


@pytest.fixture
def port(world: World, database: Database, settings: Settings) -> Iterator[int]:
    with running_receiver(database, settings, settings.max_instance_bytes) as bound:
        yield bound


def associate(port: int, called: str) -> Association:
    ae = AE(ae_title="TESTSCU")
    # Generous: a loaded CI machine can take seconds per commit.
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(Verification)
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return ae.associate("127.0.0.1", port, ae_title=called)


def send(port: int, datasets: list[Dataset], called: str = "TRIAL") -> list[Dataset]:
    """C-STORE each dataset in one association; return the response statuses."""
    assoc = associate(port, called)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds) for ds in datasets]
    finally:
        assoc.release()


def _study(db: Session, uid: str) -> Study:
    db.expire_all()
    study = db.scalars(select(Study).where(Study.study_instance_uid == uid)).one()
    db.commit()  # end the transaction: an open one would hold SQLite's write lock
    return study


def test_unknown_called_ae_title_is_rejected(port: int) -> None:
    assoc = associate(port, "NOBODY")
    assert assoc.is_rejected
    assert not assoc.is_established


def test_c_echo_on_a_project_ae_title_and_on_the_server_ae_title(port: int) -> None:
    for called in ("TRIAL", "IPACS"):
        assoc = associate(port, called)
        assert assoc.is_established, called
        status = assoc.send_c_echo()
        assoc.release()
        assert status.Status == SUCCESS


def test_the_server_ae_title_refuses_storage(port: int, database: Database) -> None:
    (status,) = send(port, [make_dataset()], called="IPACS")
    assert status.Status == NOT_AUTHORIZED
    assert count_rows(database, Instance) == 0


def test_a_multi_series_study_is_stored_and_archived_identically(
    port: int, world: World, client: TestClient, db: Session
) -> None:
    datasets = make_study("NET1", [SeriesSpec("MR", 1, 3), SeriesSpec("MR", 2, 2)])
    statuses = send(port, datasets)
    assert [s.Status for s in statuses] == [SUCCESS] * 5
    study = _study(db, datasets[0].StudyInstanceUID)
    assert (study.project_id, study.instance_count, study.series_count, study.modalities) == (
        world.trial,
        5,
        2,
        "MR",
    )
    project_id, patient_pk, study_pk = study_route(db, datasets[0].StudyInstanceUID)
    r = call(
        client, "GET", f"/projects/{project_id}/patients/{patient_pk}/studies/{study_pk}/archive", "viewer"
    )
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        archived = {n.rsplit("/", 1)[1].removesuffix(".dcm"): zf.read(n) for n in zf.namelist()}
    assert study.size_bytes == sum(len(data) for data in archived.values())
    assert {uid: dataset_part(data) for uid, data in archived.items()} == {
        ds.SOPInstanceUID: dataset_part(to_bytes(ds)) for ds in datasets
    }
    # One audit event for the study, not one per instance.
    db.expire_all()
    events = db.scalars(
        select(AuditEvent).where(AuditEvent.entity_type == "study", AuditEvent.entity_id == study.id)
    )
    assert sorted(e.action for e in events) == ["create", "receive"]
    db.commit()


def test_an_identical_duplicate_succeeds_and_changes_nothing(
    port: int, database: Database, db: Session, settings: Settings
) -> None:
    datasets = make_study("DUP", [SeriesSpec("MR", 1, 2)])
    send(port, datasets)
    before = _study(db, datasets[0].StudyInstanceUID)
    files = object_files(settings.data_dir)
    statuses = send(port, [datasets[0], datasets[0]])
    assert [s.Status for s in statuses] == [SUCCESS, SUCCESS]
    after = _study(db, datasets[0].StudyInstanceUID)
    assert (after.instance_count, after.series_count, after.size_bytes, after.version) == (
        before.instance_count,
        before.series_count,
        before.size_bytes,
        before.version,
    )
    assert count_rows(database, Instance) == 2
    assert object_files(settings.data_dir) == files


def test_a_conflicting_instance_is_refused_and_the_original_kept(
    port: int, database: Database, db: Session, settings: Settings
) -> None:
    original = make_dataset(patient_id="CONF")
    send(port, [original])
    db.expire_all()
    kept = db.scalars(select(Instance)).one()
    sha, key = kept.sha256, kept.storage_key
    db.commit()
    stored_bytes = (settings.data_dir / "store" / "objects" / key).read_bytes()
    changed = make_dataset(
        patient_id="CONF",
        study_uid=original.StudyInstanceUID,
        series_uid=original.SeriesInstanceUID,
        sop_uid=original.SOPInstanceUID,
        instance_number=9,
    )
    (status,) = send(port, [changed])
    assert status.Status == DUPLICATE
    assert status.ErrorComment.startswith("Different content already stored for SOPInstanceUID")
    assert len(status.ErrorComment) <= 64
    db.expire_all()
    assert [(i.sha256, i.storage_key) for i in db.scalars(select(Instance))] == [(sha, key)]
    db.commit()
    assert (settings.data_dir / "store" / "objects" / key).read_bytes() == stored_bytes
    assert object_files(settings.data_dir) == {key}


@pytest.mark.parametrize(
    ("omit", "comment"),
    [
        (("PatientID",), "missing required DICOM attributes: PatientID"),
        (("StudyInstanceUID",), "missing required DICOM attributes: StudyInstanceUID"),
        (("SeriesInstanceUID",), "missing required DICOM attributes: SeriesInstanceUID"),
    ],
)
def test_a_file_missing_required_tags_is_refused_with_the_reason(
    port: int, database: Database, omit: tuple[str, ...], comment: str
) -> None:
    good, bad = make_dataset(patient_id="OK"), make_dataset(omit=omit)
    statuses = send(port, [bad, good])
    assert statuses[0].Status == CANNOT_UNDERSTAND
    assert statuses[0].ErrorComment == comment
    assert statuses[1].Status == SUCCESS  # the association goes on
    assert count_rows(database, Instance) == 1


def test_a_study_uid_of_another_patient_is_refused(port: int, database: Database, db: Session) -> None:
    first = make_dataset(patient_id="OWNER")
    send(port, [first])
    intruder = make_dataset(patient_id="INTRUDER", study_uid=first.StudyInstanceUID)
    (status,) = send(port, [intruder])
    assert status.Status == PROCESSING_FAILURE
    assert "Belongs to another patient" in status.ErrorComment
    assert count_rows(database, Instance) == 1
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Patient).where(Patient.patient_id == "INTRUDER")) == 0
    db.commit()


def test_the_called_ae_title_selects_the_project(port: int, world: World, db: Session) -> None:
    ds = make_dataset(patient_id="ELSEWHERE")
    (status,) = send(port, [ds], called="OTHER")
    assert status.Status == SUCCESS
    assert _study(db, ds.StudyInstanceUID).project_id == world.other
    # Sent again to the Trial: stored in another project, so refused there.
    (status,) = send(port, [ds], called="TRIAL")
    assert status.Status == PROCESSING_FAILURE
    assert "another project" in status.ErrorComment


def test_concurrent_associations_into_one_study_lose_no_update(
    port: int, database: Database, db: Session
) -> None:
    """Several senders at once into the same new patient, study and series: every instance is
    stored and the study's counters account for each (creation races are retried)."""
    datasets = make_study("RACE", [SeriesSpec("MR", 1, 12), SeriesSpec("CT", 2, 12)])
    shares = [datasets[i::4] for i in range(4)]
    results: list[list[int]] = [[] for _ in shares]

    def sender(index: int) -> None:
        results[index] = [status.Status for status in send(port, shares[index])]

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(len(shares))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [r for share in results for r in share] == [SUCCESS] * len(datasets)
    study = _study(db, datasets[0].StudyInstanceUID)
    assert (study.instance_count, study.series_count, sorted(study.modalities.split("\\"))) == (
        len(datasets),
        2,
        ["CT", "MR"],
    )
    assert count_rows(database, Instance) == len(datasets)
    db.expire_all()
    assert study.size_bytes == db.scalar(select(func.sum(Instance.size_bytes)))
    assert db.scalar(select(func.count()).select_from(Patient).where(Patient.patient_id == "RACE")) == 1
    db.commit()


def _temp_area(settings: Settings) -> list[Path]:
    return list((settings.data_dir / "store" / "tmp").iterdir())


def test_an_instance_over_the_size_limit_is_refused_and_nothing_is_stored(
    port: int, database: Database, db: Session, settings: Settings
) -> None:
    big = make_dataset(patient_id="TOO-BIG", rows=256, columns=256)  # 128 KiB of pixels
    assert len(to_bytes(big)) > MAX_INSTANCE_BYTES
    small = make_dataset(patient_id="SMALL")
    statuses = send(port, [big, small])
    assert statuses[0].Status == OUT_OF_RESOURCES
    assert statuses[0].ErrorComment == f"Instance larger than {MAX_INSTANCE_BYTES} bytes (the server's limit)"
    assert statuses[1].Status == SUCCESS  # the association goes on
    assert count_rows(database, Instance) == 1
    assert len(object_files(settings.data_dir)) == 1
    assert _temp_area(settings) == []
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Patient).where(Patient.patient_id == "TOO-BIG")) == 0
    db.commit()


def test_the_size_limit_counts_the_file_as_stored(
    world: World, database: Database, db: Session, settings: Settings
) -> None:
    """The limit applies to the stored file (preamble, file meta and dataset), as for an HTTP
    upload: an instance of exactly the limit is accepted, one byte more is refused."""
    ds = make_dataset(patient_id="EDGE")
    with running_receiver(database, settings, None) as port:
        assert send(port, [ds])[0].Status == SUCCESS
    db.expire_all()
    size = db.scalars(select(Instance.size_bytes)).one()
    db.commit()
    with running_receiver(database, settings, size) as port:
        assert send(port, [ds])[0].Status == SUCCESS  # the same bytes: a duplicate, within the limit
    with running_receiver(database, settings, size - 1) as port:
        assert send(port, [ds])[0].Status == OUT_OF_RESOURCES
    assert count_rows(database, Instance) == 1
    assert _temp_area(settings) == []


def test_a_received_dataset_is_written_to_the_store_temp_area_and_renamed_into_the_store(
    world: World, database: Database, db: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never gathered in memory, nor in the system's temp directory (often a tmpfs): the file the
    receiver wrote while the dataset arrived is the file in the store (same inode, no copy)."""
    received: list[tuple[Path, int]] = []
    ingest_received = Ingestor.ingest_received

    def spy(self: Ingestor, project_id: int, path: Path, batch: IngestBatch) -> IngestResult:
        received.append((path.parent, path.stat().st_ino))
        return ingest_received(self, project_id, path, batch)

    monkeypatch.setattr(Ingestor, "ingest_received", spy)
    with running_receiver(database, settings, settings.max_instance_bytes) as port:
        assert send(port, [make_dataset(patient_id="SPOOL")])[0].Status == SUCCESS
    db.expire_all()
    key = db.scalars(select(Instance.storage_key)).one()
    db.commit()
    stored = settings.data_dir / "store" / "objects" / key
    assert received == [((settings.data_dir / "store" / "tmp"), stored.stat().st_ino)]
    assert _temp_area(settings) == []


def test_senders_must_cut_an_instance_into_pdus_of_at_most_a_mebibyte(
    world: World, database: Database, db: Session, settings: Settings
) -> None:
    """pynetdicom reads a whole PDU into memory: the receiver announces a bounded maximum, so a
    sender that fills what is allowed (pynetdicom does) never sends an instance in one PDU."""
    large = make_dataset(patient_id="LARGE", rows=1024, columns=1024)  # 2 MiB of pixels
    with running_receiver(database, settings, None) as port:
        assoc = associate(port, "TRIAL")
        assert assoc.is_established
        try:
            assert assoc.acceptor.maximum_length == MAX_PDU_BYTES == 1024 * 1024
            assert assoc.send_c_store(large).Status == SUCCESS
        finally:
            assoc.release()
    db.expire_all()
    assert db.scalars(select(Instance.size_bytes)).one() > 2 * MAX_PDU_BYTES
    db.commit()
