"""Crash safety: SIGKILL the real server in the middle of a C-STORE association and of an HTTP zip
upload, start it again, and check that nothing acknowledged was lost and that the database and the
files agree.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from sqlalchemy import text

from tests.dicom.real_server import RealServer, create_project, real_server
from tests.dicom.world import dataset_part
from tests.dicom_factory import make_dataset, to_bytes

INSTANCES = 200
SERIES = 2


def _study(patient_id: str) -> list[Dataset]:
    """INSTANCES instances of 32 KiB pixel data in SERIES series."""
    study_uid = generate_uid()
    series_uids = [generate_uid() for _ in range(SERIES)]
    return [
        make_dataset(
            patient_id=patient_id,
            study_uid=study_uid,
            series_uid=series_uids[i % SERIES],
            series_number=i % SERIES + 1,
            instance_number=i + 1,
            rows=128,
            columns=128,
        )
        for i in range(INSTANCES)
    ]


def _instances(server: RealServer) -> dict[str, tuple[str, str, int]]:
    """Every indexed instance: SOPInstanceUID -> (sha256, storage_key, size)."""
    engine = server.engine()
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT sop_instance_uid, sha256, storage_key, size_bytes FROM instances")
            )
            return {uid: (sha, key, size) for uid, sha, key, size in rows}
    finally:
        engine.dispose()


def _study_row(server: RealServer, uid: str) -> tuple[int, int, int, str]:
    engine = server.engine()
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT instance_count, series_count, size_bytes, modalities FROM studies "
                    "WHERE study_instance_uid = :uid"
                ),
                {"uid": uid},
            ).one()
            return row[0], row[1], row[2], row[3]
    finally:
        engine.dispose()


def _assert_index_matches_files(server: RealServer) -> dict[str, tuple[str, str, int]]:
    """No index row without its complete file, and no temp file left after start."""
    objects = server.data_dir / "store" / "objects"
    indexed = _instances(server)
    for uid, (sha, key, size) in indexed.items():
        path = objects / key
        assert path.is_file(), f"instance {uid} is indexed but {key} is missing"
        data = path.read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha), f"{key} is not what was indexed"
    assert server.stray_temp_files() == []
    return indexed


def _assert_acknowledged_present(
    server: RealServer, indexed: dict[str, tuple[str, str, int]], sent: dict[str, Dataset], acked: list[str]
) -> None:
    objects = server.data_dir / "store" / "objects"
    for uid in acked:
        assert uid in indexed, f"acknowledged instance {uid} was lost"
        stored = (objects / indexed[uid][1]).read_bytes()
        assert dataset_part(stored) == dataset_part(to_bytes(sent[uid]))
        assert pydicom.dcmread(objects / indexed[uid][1]).SOPInstanceUID == uid


def _send_until_killed(server: RealServer, datasets: list[Dataset], kill_after: int) -> list[str]:
    """C-STORE every dataset in one association; SIGKILL the server from another thread once
    `kill_after` successes have arrived, preferably while an instance is being stored (its temp
    file exists). Returns the SOPInstanceUIDs whose success status arrived."""
    acked: list[str] = []
    enough = threading.Event()
    temp = server.data_dir / "store" / "tmp"

    def killer() -> None:
        enough.wait(timeout=60)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not any(os.scandir(temp)):
            time.sleep(0.0002)
        server.kill()

    thread = threading.Thread(target=killer)
    thread.start()
    assoc = server.associate("CRASHTEST", [(MRImageStorage, [ExplicitVRLittleEndian])])
    assert assoc.is_established
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if not assoc.is_established or "Status" not in status:
                break  # the server is gone: no answer for this one
            assert status.Status == 0x0000, status
            acked.append(ds.SOPInstanceUID)
            if len(acked) == kill_after:
                enough.set()
    finally:
        enough.set()
        thread.join()
        assoc.abort()
    return acked


def test_sigkill_during_a_c_store_association_loses_nothing_acknowledged(tmp_path: Path) -> None:
    datasets = _study("CRASH-NET")
    sent = {ds.SOPInstanceUID: ds for ds in datasets}
    with real_server(tmp_path / "ipacs-data") as server:
        server.start()
        create_project(server, "Crash", "CRASHTEST")
        acked = _send_until_killed(server, datasets, kill_after=INSTANCES // 2)
        assert INSTANCES // 2 <= len(acked) < INSTANCES
        assert server.stray_temp_files(), "killed while an instance was being stored"

        server.start()  # sweeps the temp files the kill left
        indexed = _assert_index_matches_files(server)
        _assert_acknowledged_present(server, indexed, sent, acked)

        # Re-sending everything completes the study; the instances already stored are duplicates.
        assoc = server.associate("CRASHTEST", [(MRImageStorage, [ExplicitVRLittleEndian])])
        statuses = [assoc.send_c_store(ds).Status for ds in datasets]
        assoc.release()
        assert statuses == [0x0000] * INSTANCES
        indexed = _assert_index_matches_files(server)
        assert set(indexed) == set(sent)
        _assert_acknowledged_present(server, indexed, sent, list(sent))
        count, series, size, modalities = _study_row(server, datasets[0].StudyInstanceUID)
        assert (count, series, size, modalities) == (
            INSTANCES,
            SERIES,
            sum(size for _, _, size in indexed.values()),
            "MR",
        )


def _zip_file(path: Path, datasets: list[Dataset]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for ds in datasets:
            zf.writestr(f"{ds.SOPInstanceUID}.dcm", to_bytes(ds))


def _chunks(path: Path, on_half: threading.Event | None = None) -> Iterator[bytes]:
    size = path.stat().st_size
    sent = 0
    with path.open("rb") as f:
        while chunk := f.read(64 * 1024):
            yield chunk
            sent += len(chunk)
            if on_half is not None and sent >= size // 2 and not on_half.is_set():
                on_half.set()
                time.sleep(0.5)  # the server is being killed; give it the time to die


def _upload(
    server: RealServer, project_id: int, path: Path, on_half: threading.Event | None = None
) -> httpx.Response:
    with server.admin() as api:
        return api.post(
            f"/projects/{project_id}/dicom",
            content=_chunks(path, on_half),
            headers={"Content-Type": "application/zip"},
        )


def _upload_until_killed(server: RealServer, project_id: int, path: Path, kill_when: str) -> None:
    """Upload the zip; SIGKILL the server half way through the body, or once ingest has stored some
    instances. The client never gets an answer."""
    half = threading.Event()
    failure: list[BaseException] = []

    def upload() -> None:
        try:
            _upload(server, project_id, path, half)
        except httpx.HTTPError as exc:
            failure.append(exc)

    thread = threading.Thread(target=upload)
    thread.start()
    if kill_when == "body":
        assert half.wait(timeout=30)
    else:
        deadline = time.monotonic() + 30
        while len(_instances(server)) < INSTANCES // 4:
            assert time.monotonic() < deadline, "ingest did not start"
            time.sleep(0.02)
    assert server.stray_temp_files(), "the upload should be staged in the temp area"
    server.kill()
    thread.join(timeout=30)
    assert failure, "the upload should have failed with the server"


def test_sigkill_during_an_http_zip_upload_leaves_a_consistent_store(tmp_path: Path) -> None:
    datasets = _study("CRASH-HTTP")
    sent = {ds.SOPInstanceUID: ds for ds in datasets}
    archive = tmp_path / "study.zip"
    _zip_file(archive, datasets)
    with real_server(tmp_path / "ipacs-data") as server:
        server.start()
        project_id = create_project(server, "Crash", "CRASHTEST")

        _upload_until_killed(server, project_id, archive, kill_when="body")
        server.start()
        assert _assert_index_matches_files(server) == {}

        _upload_until_killed(server, project_id, archive, kill_when="ingest")
        server.start()
        partial = _assert_index_matches_files(server)
        assert INSTANCES // 4 <= len(partial) < INSTANCES
        _assert_acknowledged_present(server, partial, sent, list(partial))

        r = _upload(server, project_id, archive)
        assert r.status_code == 200, r.text
        summary = r.json()
        assert summary["failed"] == []
        assert (summary["stored"], summary["duplicates"]) == (INSTANCES - len(partial), len(partial))
        indexed = _assert_index_matches_files(server)
        assert set(indexed) == set(sent)
        count, series, size, _ = _study_row(server, datasets[0].StudyInstanceUID)
        assert (count, series, size) == (INSTANCES, SERIES, sum(size for _, _, size in indexed.values()))
