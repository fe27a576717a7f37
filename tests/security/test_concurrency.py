"""Consistency under concurrency, short form of bench/concurrency.py: the real server with
2 workers, 16 concurrent clients, a bounded count of mixed reads and writes. No 5xx, no
"database is locked", and every acknowledged write read back (the shared counter, written
with If-Match by every client, equals the number of acknowledged increments).
Counts only: timing belongs to the benchmark (docs/performance.md)."""

from __future__ import annotations

import os
from pathlib import Path

from bench.concurrency import run
from bench.server import running_server

CLIENTS = 16
OPERATIONS = 12  # per client


def test_concurrent_clients_lose_nothing(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", os.environ.get("IPACS_TEST_DATABASE_URL"), workers=2) as server:
        outcome = run(server, clients=CLIENTS, operations=OPERATIONS)
    assert outcome.problems == []
    assert outcome.server_errors == 0, outcome.statuses
    assert outcome.locked_answers == 0
    assert sum(outcome.statuses.values()) >= CLIENTS * OPERATIONS
    # The mix wrote: patients created, values set, the counter incremented under contention.
    assert outcome.statuses[201] > 0 and outcome.statuses[200] > 0
