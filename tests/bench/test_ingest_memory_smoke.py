"""The ingest-memory benchmark (bench/ingest_memory.py) runs end to end on a tiny study and writes
its table; no figure is asserted, only that each run is there and its data is cleaned up.

C-STORE from storescu takes part where dcmtk is installed. On PostgreSQL
(IPACS_TEST_DATABASE_URL) every run is made on a database of its own there too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = {
    "cstore": "C-STORE (storescu, 1 association)",
    "pynetdicom": "C-STORE (pynetdicom, 1 association)",
    "zip": "HTTP upload of one zip",
}


def test_the_ingest_memory_bench_produces_its_table_and_cleans_up(tmp_path: Path) -> None:
    output, work = tmp_path / "section.md", tmp_path / "work"
    work.mkdir()
    channels = ["cstore", "pynetdicom", "zip"] if shutil.which("storescu") else ["pynetdicom", "zip"]
    command = [
        sys.executable,
        "-m",
        "bench",
        "ingest-memory",
        *("--megabytes", "2", "--frames", "2", "--workers", "1", "--channels", ",".join(channels)),
        *("--output", str(output), "--workdir", str(work)),
    ]
    pg_url = os.environ.get("IPACS_TEST_DATABASE_URL")
    if pg_url:
        command += ["--pg-url", pg_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPACS_")}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]

    table = output.read_text()
    assert "## Peak memory while ingesting one large study" in table
    assert "`slices`: 4 instances of single-frame 512x512" in table
    assert "`multiframe`: 2 instances of 2 frames 512x512" in table
    rows = [
        line.split(" | ")
        for line in table.splitlines()
        if line.startswith("| SQLite") or line.startswith("| PostgreSQL")
    ]
    databases = ["SQLite", "PostgreSQL"] if pg_url else ["SQLite"]
    expected = {
        (database, shape, channel)
        for database in databases
        for shape in ("slices", "multiframe")
        for channel in (CHANNELS[c] for c in channels)
    }
    assert {(row[0].lstrip("| "), row[2], row[3]) for row in rows} == expected
    for row in rows:
        assert row[-1].strip(" |") in ("yes", "**no**"), row
        assert row[9].endswith(" MB") and float(row[9].removesuffix(" MB")) > 0, row  # peak since start
    assert "python -m bench.ingest_memory --megabytes 2" in table
    assert "<url>" in table or not pg_url  # the PostgreSQL URL is not written out
    assert list(work.iterdir()) == []  # the study, its zip and the servers' data are gone
