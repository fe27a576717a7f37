"""dcmtk's storescu sending a multi-series study to the receiver of the real `ipacs serve` process."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.dicom.real_server import create_project, real_server
from tests.dicom.world import dataset_part
from tests.dicom_factory import make_dataset, to_bytes

pytestmark = pytest.mark.skipif(
    shutil.which("storescu") is None, reason="dcmtk's storescu is not on PATH (.ci/run installs dcmtk)"
)

SERIES = (("MR", 1, 4), ("MR", 2, 3), ("CT", 3, 5))


def _write_study(folder: Path) -> dict[str, Path]:
    """Files of one study in three series, as {SOPInstanceUID: path}."""
    first = make_dataset(patient_id="DCMTK-1")
    files: dict[str, Path] = {}
    for modality, number, count in SERIES:
        series = make_dataset().SeriesInstanceUID
        for i in range(1, count + 1):
            ds = make_dataset(
                patient_id="DCMTK-1",
                patient_name="Tool^Dee",
                study_uid=first.StudyInstanceUID,
                series_uid=series,
                modality=modality,
                series_number=number,
                instance_number=i,
                rows=32,
                columns=32,
            )
            path = folder / f"s{number}_{i}.dcm"
            path.write_bytes(to_bytes(ds))
            files[ds.SOPInstanceUID] = path
    return files


def _storescu(port: int, called: str, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["storescu", "-aet", "STORESCU", "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        env={"PATH": "/usr/bin:/bin", "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_storescu_sends_a_multi_series_study(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    folder.mkdir()
    files = _write_study(folder)
    with real_server(tmp_path / "ipacs-data") as server:
        server.start()
        project_id = create_project(server, "dcmtk", "DCMTKTEST")

        done = _storescu(server.dicom_port, "DCMTKTEST", sorted(files.values()))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "E:" not in done.stdout + done.stderr, done.stdout + done.stderr

        with server.admin() as api:
            patients = api.get(f"/projects/{project_id}/patients", params={"patient_id": "DCMTK-1"}).json()
            assert [p["patient_name"] for p in patients] == ["Tool^Dee"]
            base = f"/projects/{project_id}/patients/{patients[0]['id']}/studies"
            (study,) = api.get(base).json()
            series = api.get(f"{base}/{study['id']}/series").json()
            archive = api.get(f"{base}/{study['id']}/archive")
        assert archive.status_code == 200
        with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
            stored = {n.rsplit("/", 1)[1].removesuffix(".dcm"): zf.read(n) for n in zf.namelist()}

        # Every instance stored, and each dataset exactly as it left the sender.
        assert set(stored) == set(files)
        for uid, path in files.items():
            assert dataset_part(stored[uid]) == dataset_part(path.read_bytes()), uid
        assert study["instance_count"] == sum(count for _, _, count in SERIES)
        assert study["series_count"] == len(SERIES)
        assert sorted(study["modalities"]) == ["CT", "MR"]
        assert study["size_bytes"] == sum(len(data) for data in stored.values())
        assert sorted((s["series_number"], s["modality"], s["instance_count"]) for s in series) == sorted(
            (number, modality, count) for modality, number, count in SERIES
        )

        # Sent again: every instance is an identical duplicate, a success that changes nothing.
        again = _storescu(server.dicom_port, "DCMTKTEST", sorted(files.values()))
        assert again.returncode == 0, again.stdout + again.stderr
        with server.admin() as api:
            assert api.get(f"{base}/{study['id']}").json()["instance_count"] == study["instance_count"]


def test_storescu_to_an_unknown_ae_title_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "one.dcm"
    path.write_bytes(to_bytes(make_dataset()))
    with real_server(tmp_path / "ipacs-data") as server:
        server.start()
        done = _storescu(server.dicom_port, "NOSUCHAE", [path])
        assert done.returncode != 0
        assert "Called AE Title Not Recognized" in done.stdout + done.stderr
