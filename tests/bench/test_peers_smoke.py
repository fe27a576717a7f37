"""The peers benchmark (bench/peers) runs end to end on a tiny dataset and writes its table.

No timing is asserted: the figures of so short a run mean nothing. Orthanc
takes part where it is installed and this process may make network
namespaces (root); wrk is used where installed, else the Python stand-in.
On PostgreSQL (IPACS_TEST_DATABASE_URL) iPACS also runs on a database of its own there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _orthanc_usable() -> bool:
    return bool(shutil.which("Orthanc") and shutil.which("unshare") and shutil.which("nsenter")) and (
        os.geteuid() == 0
    )


def test_the_peers_harness_produces_its_table(tmp_path: Path) -> None:
    output = tmp_path / "peers.md"
    command = [
        sys.executable,
        "-m",
        "bench",
        "peers",
        *("--patients", "4", "--studies", "1", "--series", "1", "--instances", "2"),
        *("--rows", "16", "--columns", "16", "--rounds", "1", "--seconds", "1", "--connections", "4"),
        *("--growth", "2", "--workers", "1", "--no-install"),
        *("--output", str(output), "--workdir", str(tmp_path / "work")),
    ]
    with_orthanc = _orthanc_usable()
    if not with_orthanc:
        command.append("--no-orthanc")
    pg_url = os.environ.get("IPACS_TEST_DATABASE_URL")
    if pg_url:
        command += ["--pg-url", pg_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPACS_")}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]

    table = output.read_text()
    assert "## iPACS beside Orthanc" in table
    header = next(line for line in table.splitlines() if line.startswith("| Workload |"))
    assert "iPACS (SQLite)" in header
    assert ("Orthanc" in header) is with_orthanc
    assert ("iPACS (PostgreSQL)" in header) is bool(pg_url)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    for label in ("HTTP upload, 1 client (curl)", "GET patient, Basic", "Study zip download"):
        row = next(line for name, line in rows.items() if name.startswith(label))
        ours = row.split(" | ")[2]
        assert ours != "—" and float(ours.replace(",", "")) > 0, row
    assert "| iPACS (SQLite) |" in table  # the peak-memory table: rounds, 1x and 2x
    assert "C-STORE x4, all 16 (2x)" in table
    assert "wrk -t2 -c4 -d1s" in table  # the exact client commands
