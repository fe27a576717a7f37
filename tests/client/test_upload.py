"""`ipacs upload`: folders and zips, a corrupt file reported while the rest goes in,
and an upload killed half-way that a re-run finishes without re-sending stored files."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx

from ipacs.client import Client, Project
from tests.client.conftest import Cli, subprocess_env
from tests.dicom_factory import SeriesSpec, make_study, to_bytes
from tests.test_server_e2e import Server


def _received(server: Server, result: str) -> float:
    """The server's own count of DICOM instances received over HTTP with this result."""
    text = httpx.get(f"{server.base_url}/metrics").text
    pattern = rf'ipacs_dicom_instances_received_total\{{[^}}]*result="{result}"[^}}]*\}} ([0-9.e+]+)'
    return sum(float(m) for m in re.findall(pattern, text))


def _stored_instances(client: Client, project: Project) -> int:
    return sum(
        s.instance_count
        for p in client.patients.iter(project, recursive=True)
        for s in client.studies.list(project, p)
    )


def _write_study(folder: Path, patient_id: str, instances: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    datasets = make_study(patient_id, series=[SeriesSpec(instances=instances)])
    paths = []
    for i, ds in enumerate(datasets):
        path = folder / f"{i:04d}.dcm"
        path.write_bytes(to_bytes(ds))
        paths.append(path)
    return paths


def test_a_corrupt_file_is_reported_and_the_rest_uploaded(
    cli: Cli, client: Client, project: Project, tmp_path: Path
) -> None:
    folder = tmp_path / "scans"
    _write_study(folder / "series", "P1", 5)
    (folder / "broken.dcm").write_bytes(b"DICM? no: just some bytes")
    (folder / "DICOMDIR").write_bytes(b"an index, not an image")
    result = cli("upload", project.full_path, str(folder), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["files"], report["stored"], report["skipped"]) == (6, 5, 0)
    assert [f["name"] for f in report["failed"]] == [str(folder / "broken.dcm")]
    assert "DICM" in report["failed"][0]["reason"] or "DICOM" in report["failed"][0]["reason"]
    assert _stored_instances(client, project) == 5
    again = json.loads(cli("upload", project.full_path, str(folder), "--json").stdout)
    assert (again["skipped"], again["stored"], again["duplicates"], len(again["failed"])) == (5, 0, 0, 1)


def test_zips_and_single_files(cli: Cli, client: Client, project: Project, tmp_path: Path) -> None:
    paths = _write_study(tmp_path / "a", "P1", 3)
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths[:2]:
            zf.write(path, f"inner/{path.name}")
    result = cli("upload", project.full_path, str(archive), str(paths[2]))
    assert result.exit_code == 0, result.output
    assert "3 files: 3 stored" in result.stdout
    assert _stored_instances(client, project) == 3
    report = client.upload(project, [archive, paths[2]])
    assert (report.skipped, report.stored) == (3, 0)


def test_a_killed_upload_resumes_without_resending_stored_files(
    cli: Cli, client: Client, project: Project, server: Server, tmp_path: Path
) -> None:
    total = 300
    _write_study(tmp_path / "scans", "P1", total)
    stored_before, duplicates_before = _received(server, "stored"), _received(server, "duplicate")
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ipacs",
            "upload",
            project.full_path,
            str(tmp_path / "scans"),
            "--workers",
            "1",
        ],
        env=subprocess_env(cli.config_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while _received(server, "stored") - stored_before < 20:
            assert child.poll() is None, "the upload ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    time.sleep(0.5)  # a request in flight when the client died is finished by the server
    first_run = _received(server, "stored") - stored_before
    assert 20 <= first_run < total
    result = cli("upload", project.full_path, str(tmp_path / "scans"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["skipped"] == first_run
    assert report["stored"] == total - first_run
    assert report["duplicates"] == 0
    # Server side: every file stored exactly once, nothing sent twice.
    assert _received(server, "stored") - stored_before == total
    assert _received(server, "duplicate") == duplicates_before
    assert _stored_instances(client, project) == total
