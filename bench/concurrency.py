"""Consistency under load: 16 concurrent clients, mixed reads and writes, against the real
server started with 2 workers (`ipacs serve --workers 2`), on SQLite and PostgreSQL.

    python -m bench.concurrency                                  # SQLite, 16 clients x 200 ops
    python -m bench.concurrency --databases sqlite,postgresql --pg-url postgresql+psycopg://...

Each client creates patients, sets and edits the values of its own patients,
reads lists, patients and searches, and increments a counter shared by all
clients with If-Match (re-reading on 412). Afterwards everything is read back:
every acknowledged patient and value must be there with its last acknowledged
content, and the shared counter must equal the number of acknowledged
increments (a lost update would make it smaller). Any 5xx, or "database is
locked" in any answer or in the server's log, fails the run.
Figures replace the "concurrency" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.report import percentile, write_section
from bench.server import ADMIN_PASSWORD, Server, running_server

API = "/api/v1.0"
PASSWORD = "bench-client-password"
# Shares of each operation in a client's mix (they add up to 100).
MIX = (
    ("create_patient", 15),
    ("set_value", 25),
    ("increment", 20),
    ("read_patient", 15),
    ("list_patients", 15),
    ("search", 10),
)


@dataclass
class Acknowledged:
    """What the server said it stored, as each client saw it."""

    patients: dict[str, int] = field(default_factory=dict)  # patient_id -> id
    values: dict[int, int] = field(default_factory=dict)  # patient pk -> last acknowledged score
    increments: int = 0


@dataclass(frozen=True)
class Target:
    project: int
    shared: int  # the patient whose counter every client increments
    score: int  # datapoint ids
    counter: int


@dataclass
class Outcome:
    clients: int
    operations: int
    seconds: float
    statuses: Counter[int]
    latencies: dict[str, list[float]]
    retries_412: int
    locked_answers: int
    problems: list[str]

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


class Client:
    def __init__(self, number: int, server: Server, target: Target, seed: int) -> None:
        self.number = number
        self.http = httpx.Client(base_url=server.base_url, auth=(f"client{number}", PASSWORD), timeout=120)
        self.target = target
        self.project = target.project
        self.shared = target.shared
        self.random = random.Random(seed)
        self.acked = Acknowledged()
        self.statuses: Counter[int] = Counter()
        self.latencies: dict[str, list[float]] = {name: [] for name, _ in MIX}
        self.retries = 0
        self.locked = 0
        self.counter = 0
        self.failure: str | None = None

    def call(self, kind: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        started = time.perf_counter()
        r = self.http.request(method, API + path, **kwargs)
        self.latencies[kind].append(time.perf_counter() - started)
        self.statuses[r.status_code] += 1
        if "database is locked" in r.text:
            self.locked += 1
        return r

    def run(self, operations: int) -> None:
        kinds = [name for name, _ in MIX]
        weights = [share for _, share in MIX]
        try:
            for _ in range(operations):
                getattr(self, self.random.choices(kinds, weights)[0])()
        except Exception as exc:  # reported with the run's problems, not lost in a thread
            self.failure = f"client {self.number}: {exc!r}"

    def create_patient(self) -> None:
        self.counter += 1
        code = f"C{self.number}-{self.counter}"
        path = f"/projects/{self.project}/patients"
        r = self.call("create_patient", "POST", path, json={"patient_id": code})
        if r.status_code == 201:
            self.acked.patients[code] = r.json()["id"]

    def _own_patient(self) -> int | None:
        if not self.acked.patients:
            return None
        return self.random.choice(sorted(self.acked.patients.values()))

    def set_value(self) -> None:
        patient = self._own_patient()
        if patient is None:
            return self.create_patient()
        score = self.random.randrange(1_000_000)
        path = f"/projects/{self.project}/patients/{patient}/datapoints/{self.target.score}"
        r = self.call("set_value", "PUT", path, json={"value": score})
        if r.status_code == 200:
            self.acked.values[patient] = score
        return None

    def increment(self) -> None:
        """Read the shared counter and write it plus one with If-Match; on 412, read again."""
        path = f"/projects/{self.project}/patients/{self.shared}/datapoints/{self.target.counter}"
        while True:
            r = self.call("increment", "GET", path)
            if r.status_code != 200:
                return
            current = r.json()["value"] or 0
            headers = {"If-Match": r.headers["etag"]}
            w = self.call("increment", "PUT", path, json={"value": current + 1}, headers=headers)
            if w.status_code == 200:
                self.acked.increments += 1
                return
            if w.status_code != 412:
                return
            self.retries += 1

    def read_patient(self) -> None:
        patient = self._own_patient() or self.shared
        self.call("read_patient", "GET", f"/projects/{self.project}/patients/{patient}")

    def list_patients(self) -> None:
        self.call("list_patients", "GET", f"/projects/{self.project}/patients", params={"limit": 50})

    def search(self) -> None:
        body = {"query": f"score >= {self.random.randrange(1_000_000)}", "limit": 20}
        self.call("search", "POST", f"/projects/{self.project}/search", json=body)


def _setup(server: Server, clients: int) -> Target:
    admin = httpx.Client(base_url=server.base_url + API, auth=("admin", ADMIN_PASSWORD), timeout=60)
    project = admin.post("/projects", json={"name": f"Load {time.time_ns()}"}).json()["id"]
    ids = {}
    for name in ("score", "counter"):
        r = admin.post(f"/projects/{project}/datapoints", json={"name": name, "type": "integer"})
        ids[name] = r.json()["id"]
    shared = admin.post(f"/projects/{project}/patients", json={"patient_id": "SHARED"}).json()["id"]
    # Set, so that it has an ETag: every increment is then a conditional write.
    counter = {"datapoint_id": ids["counter"], "value": 0}
    admin.post(f"/projects/{project}/patients/{shared}/datapoints", json=counter).raise_for_status()
    for number in range(clients):
        username = f"client{number}"
        admin.post("/users", json={"username": username, "password": PASSWORD})
        admin.put(f"/projects/{project}/members/{username}", json={"role": "user"})
    admin.close()
    return Target(project, shared, ids["score"], ids["counter"])


def _verify(server: Server, target: Target, acked: Acknowledged) -> list[str]:
    """Read everything back; describe every acknowledged write that is missing or stale."""
    problems = []
    admin = httpx.Client(base_url=server.base_url + API, auth=("admin", ADMIN_PASSWORD), timeout=120)
    project = target.project
    stored: dict[str, int] = {}
    after = 0
    while True:
        page = admin.get(f"/projects/{project}/patients", params={"limit": 1000, "after": after}).json()
        stored.update({p["patient_id"]: p["id"] for p in page})
        if len(page) < 1000:
            break
        after = page[-1]["id"]
    for code, pk in acked.patients.items():
        if stored.get(code) != pk:
            problems.append(f"patient {code} (id {pk}) acknowledged but not stored")
    for pk, score in acked.values.items():
        r = admin.get(f"/projects/{project}/patients/{pk}/datapoints/{target.score}")
        if r.status_code != 200 or r.json()["value"] != score:
            problems.append(f"patient {pk}: acknowledged score {score}, stored {r.text[:100]}")
    r = admin.get(f"/projects/{project}/patients/{target.shared}/datapoints/{target.counter}")
    counter = r.json()["value"] or 0
    if counter != acked.increments:
        problems.append(f"shared counter is {counter}, {acked.increments} increments were acknowledged")
    admin.close()
    return problems


def run(server: Server, clients: int = 16, operations: int = 200, seed: int = 7) -> Outcome:
    """The load against a running server; `operations` per client."""
    target = _setup(server, clients)
    workers = [Client(n, server, target, seed * 1000 + n) for n in range(clients)]
    threads = [threading.Thread(target=w.run, args=(operations,)) for w in workers]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    acked = Acknowledged()
    statuses: Counter[int] = Counter()
    latencies: dict[str, list[float]] = {name: [] for name, _ in MIX}
    for w in workers:
        acked.patients.update(w.acked.patients)
        acked.values.update(w.acked.values)
        acked.increments += w.acked.increments
        statuses.update(w.statuses)
        for kind, samples in w.latencies.items():
            latencies[kind].extend(samples)
        w.http.close()
    problems = _verify(server, target, acked)
    problems += [w.failure for w in workers if w.failure]
    problems += [f"server log: {line.strip()}" for line in server.tracebacks()]
    return Outcome(
        clients=clients,
        operations=clients * operations,
        seconds=seconds,
        statuses=statuses,
        latencies=latencies,
        retries_412=sum(w.retries for w in workers),
        locked_answers=sum(w.locked for w in workers),
        problems=problems,
    )


def _table(results: dict[str, Outcome], workers: int) -> str:
    lines = [
        f"{next(iter(results.values())).clients} clients, {workers} server workers; each client runs its "
        "share of the operations below in a random mix.",
        "",
        "| database | operations | seconds | ops/s | requests | 412 retries | 5xx | locked | lost writes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, o in results.items():
        requests = sum(o.statuses.values())
        lines.append(
            f"| {name} | {o.operations} | {o.seconds:.1f} | {o.operations / o.seconds:.0f} | {requests} "
            f"| {o.retries_412} | {o.server_errors} | {o.locked_answers} | {len(o.problems)} |"
        )
    lines += ["", "Latency per operation (ms, p50 / p95 / max):", ""]
    lines.append("| operation | " + " | ".join(results) + " |")
    lines.append("|---|" + "---:|" * len(results))
    for kind, _ in MIX:
        cells = []
        for o in results.values():
            samples = o.latencies[kind] or [0.0]
            cells.append(
                f"{percentile(samples, 0.5) * 1000:.0f} / {percentile(samples, 0.95) * 1000:.0f} / "
                f"{max(samples) * 1000:.0f}"
            )
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "`increment` is a read plus an If-Match write of one value shared by every client, repeated "
        "on 412; its count of acknowledged writes must equal the final value, and did. "
        "Command: `python -m bench.concurrency --databases sqlite,postgresql --pg-url ...`.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite")
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--operations", type=int, default=200, help="per client")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/performance.md")
    args = parser.parse_args()
    results: dict[str, Outcome] = {}
    for name in args.databases.split(","):
        url = None if name == "sqlite" else args.pg_url
        if name != "sqlite" and not url:
            parser.error("--pg-url is needed for postgresql")
        with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), url, args.workers) as server:
            outcome = run(server, args.clients, args.operations)
        results[name] = outcome
        statuses = dict(outcome.statuses)
        print(f"{name}: {outcome.operations} ops in {outcome.seconds:.1f}s, statuses {statuses}")
        for problem in outcome.problems:
            print("  PROBLEM", problem)
    if not args.no_write:
        write_section("concurrency", _table(results, args.workers))
    if any(o.problems or o.server_errors or o.locked_answers for o in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
