"""Crash recovery: `kill -9` of the server (supervisor and workers) during a stream of writes,
then a restart on the same data: every acknowledged write must be there, and the database
must pass its integrity check.

    python -m bench.crash                          # SQLite, 5 rounds
    python -m bench.crash --database postgresql --pg-url postgresql+psycopg://... --rounds 5

Writers create patients and set a value on each, as fast as the server answers; a
write counts as acknowledged when its 201/200 arrived. Each round kills the server
after a number of acknowledged writes, restarts it and checks everything acknowledged
so far. SQLite: PRAGMA integrity_check and foreign_key_check. PostgreSQL: amcheck is
not assumed; instead, queries that must return nothing on a consistent database
(orphans, duplicate values, projects without their closure row).
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from bench.server import ADMIN_PASSWORD, Server, running_server

API = "/api/v1.0"
PASSWORD = "crash-writer-password"
# Each must return no row on a consistent database.
CONSISTENCY_QUERIES = {
    "values without their patient": (
        "SELECT v.id FROM datapoint_values v LEFT JOIN patients p ON p.id = v.patient_id WHERE p.id IS NULL"
    ),
    "patients without their project": (
        "SELECT p.id FROM patients p LEFT JOIN projects r ON r.id = p.project_id WHERE r.id IS NULL"
    ),
    "two values for one patient and datapoint": (
        "SELECT patient_id, datapoint_id FROM datapoint_values GROUP BY patient_id, datapoint_id "
        "HAVING count(*) > 1"
    ),
    "projects without their own closure row": (
        "SELECT r.id FROM projects r LEFT JOIN project_closure c "
        "ON c.ancestor_id = r.id AND c.descendant_id = r.id WHERE c.ancestor_id IS NULL"
    ),
    "studies without their patient": (
        "SELECT s.id FROM studies s LEFT JOIN patients p ON p.id = s.patient_id WHERE p.id IS NULL"
    ),
}


@dataclass
class Stream:
    """What the writers were told was stored."""

    patients: dict[str, int] = field(default_factory=dict)  # patient_id -> value acknowledged
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    failed: int = 0  # cut off by the kill (no answer): not acknowledged


@dataclass(frozen=True)
class Setup:
    project: int
    datapoint: int


def setup(server: Server, writers: int) -> Setup:
    admin = httpx.Client(base_url=server.base_url + API, auth=("admin", ADMIN_PASSWORD), timeout=60)
    project = admin.post("/projects", json={"name": f"Crash {time.time_ns()}"}).json()["id"]
    datapoint = admin.post(f"/projects/{project}/datapoints", json={"name": "seq", "type": "integer"})
    for n in range(writers):
        admin.post("/users", json={"username": f"writer{n}", "password": PASSWORD})
        admin.put(f"/projects/{project}/members/writer{n}", json={"role": "user"})
    admin.close()
    return Setup(project, datapoint.json()["id"])


def _write(server: Server, target: Setup, stream: Stream, writer: int, round_: int) -> None:
    http = httpx.Client(base_url=server.base_url + API, auth=(f"writer{writer}", PASSWORD), timeout=30)
    i = 0
    while not stream.stop.is_set():
        i += 1
        code = f"R{round_}-W{writer}-{i}"
        try:
            r = http.post(f"/projects/{target.project}/patients", json={"patient_id": code})
            if r.status_code != 201:
                raise RuntimeError(f"create answered {r.status_code}: {r.text[:200]}")
            with stream.lock:
                stream.patients[code] = 0
            body = {"datapoint_id": target.datapoint, "value": i}
            r = http.post(f"/projects/{target.project}/patients/{r.json()['id']}/datapoints", json=body)
            if r.status_code != 201:
                raise RuntimeError(f"value answered {r.status_code}: {r.text[:200]}")
            with stream.lock:
                stream.patients[code] = i
        except httpx.TransportError:
            with stream.lock:
                stream.failed += 1
            if stream.stop.wait(0.05):
                break
    http.close()


def crash_round(
    server: Server, target: Setup, stream: Stream, writers: int, kill_after: int, round_: int
) -> None:
    """Stream writes, kill -9 the server once `kill_after` more writes were acknowledged, restart."""
    stream.stop.clear()
    before = len(stream.patients)
    threads = [
        threading.Thread(target=_write, args=(server, target, stream, n, round_), daemon=True)
        for n in range(writers)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 300
    while len(stream.patients) - before < kill_after and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()  # mid-stream: requests are in flight right now
    stream.stop.set()
    for t in threads:
        t.join(timeout=60)
    server.start()


def verify(server: Server, target: Setup, stream: Stream) -> list[str]:
    """Every acknowledged patient and value, read back through the API."""
    admin = httpx.Client(base_url=server.base_url + API, auth=("admin", ADMIN_PASSWORD), timeout=120)
    stored: dict[str, int] = {}
    after = 0
    while True:
        page = admin.get(f"/projects/{target.project}/patients", params={"limit": 1000, "after": after})
        rows = page.json()
        stored.update({p["patient_id"]: p["id"] for p in rows})
        if len(rows) < 1000:
            break
        after = rows[-1]["id"]
    problems = []
    for code, value in stream.patients.items():
        if code not in stored:
            problems.append(f"acknowledged patient {code} is missing")
            continue
        if value:
            r = admin.get(f"/projects/{target.project}/patients/{stored[code]}/datapoints/{target.datapoint}")
            if r.json().get("value") != value:
                problems.append(f"{code}: acknowledged value {value}, stored {r.text[:100]}")
    # And the restarted server takes writes.
    r = admin.post(f"/projects/{target.project}/patients", json={"patient_id": f"after-{time.time_ns()}"})
    if r.status_code != 201:
        problems.append(f"the restarted server refused a write: {r.status_code} {r.text[:200]}")
    admin.close()
    return problems


def integrity_problems(database_url: str) -> list[str]:
    """The database's own check (SQLite) and the consistency queries (both)."""
    problems = []
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        try:
            result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            if result != ["ok"]:
                problems.append(f"integrity_check: {result[:5]}")
            orphans = list(conn.execute("PRAGMA foreign_key_check"))
            if orphans:
                problems.append(f"foreign_key_check: {orphans[:5]}")
        finally:
            conn.close()
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            for what, query in CONSISTENCY_QUERIES.items():
                rows = conn.execute(text(query)).fetchmany(5)
                if rows:
                    problems.append(f"{what}: {rows}")
    finally:
        engine.dispose()
    return problems


@dataclass
class Report:
    rounds: int
    acknowledged: int
    cut_off: int
    problems: list[str]


def run(server: Server, rounds: int, writers: int = 4, kill_after: int = 40) -> Report:
    target = setup(server, writers)
    stream = Stream()
    problems: list[str] = []
    for round_ in range(rounds):
        crash_round(server, target, stream, writers, kill_after, round_)
        problems += [f"round {round_}: {p}" for p in verify(server, target, stream)]
        problems += [f"round {round_}: {p}" for p in integrity_problems(server.effective_database_url)]
    return Report(rounds, sum(1 for v in stream.patients.values() if v), stream.failed, problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--kill-after", type=int, default=200, help="acknowledged writes per round")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    url = args.pg_url if args.database == "postgresql" else None
    if args.database == "postgresql" and not url:
        parser.error("--pg-url is needed for postgresql")
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), url, args.workers) as server:
        report = run(server, args.rounds, args.writers, args.kill_after)
    print(
        f"{args.database}: {report.rounds} kill -9 rounds, {report.acknowledged} acknowledged writes "
        f"all present, {report.cut_off} requests cut off by the kills"
        if not report.problems
        else "\n".join(report.problems)
    )
    if report.problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
