"""Crash recovery, short form of bench/crash.py: kill -9 of the real server (supervisor and
both workers) while writers stream patients and values, restart on the same data, and find
every acknowledged write and a database that passes its integrity check (SQLite:
integrity_check and foreign_key_check; both: queries that must find no orphan or duplicate).
Long form: `python -m bench.crash --rounds 5 --kill-after 200` (docs/security.md)."""

from __future__ import annotations

import os
from pathlib import Path

from bench.crash import integrity_problems, run
from bench.server import running_server


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", os.environ.get("IPACS_TEST_DATABASE_URL"), workers=2) as server:
        report = run(server, rounds=1, writers=4, kill_after=30)
        assert integrity_problems(server.effective_database_url) == []
    assert report.problems == []
    assert report.acknowledged >= 30 - 4  # values of the last in-flight patients may be cut off
    assert not server.tracebacks(), server.tracebacks()
