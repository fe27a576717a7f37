"""Search at scale: StringQuery pages, deep keyset paging, datapoint search and CSV export
on 100k and 1M synthetic patients (10 typed datapoints each), SQLite and PostgreSQL.

    python -m bench.search                       # SQLite, 100k and 1M
    python -m bench.search --databases sqlite,postgresql --pg-url postgresql+psycopg://...

Databases are built once with `ipacs demo`'s loader under bench/.data (SQLite)
or as ipacs_bench_<size> (PostgreSQL) and reused. Results replace the
"search" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from bench.report import p50, percentile, write_section
from ipacs.app import create_app
from ipacs.auth.caller import Caller
from ipacs.auth.passwords import Passwords
from ipacs.config import Settings
from ipacs.db.engine import Database
from ipacs.db.migrate import upgrade_to_head
from ipacs.demo import load_demo
from ipacs.models import Patient, Project, User
from ipacs.search import export
from ipacs.search import service as search_service
from ipacs.users import service as user_service

DATA = Path(__file__).resolve().parent / ".data"
CHEAP_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_cost_kib": 1024, "argon2_parallelism": 1}
PASSWORD = "bench-password-1"

# (label, query, target, selective?) — selective ones match at most ~1,000 of 1M.
QUERIES: list[tuple[str, str, str, bool]] = [
    ("selective numeric range", "weight >= 249.8", "patients", True),
    ("selective AND of three", "age = 37 AND ecog = 2 AND responder = true", "patients", True),
    ("date range (one day)", "enrolled >= '2022-03-01' AND enrolled < '2022-03-02'", "patients", True),
    ("study condition", "study.study_date = '2022-03-15'", "patients", True),
    ("choice IN + range", "histology IN ('adeno', 'small-cell') AND weight >= 249.5", "patients", True),
    ("NOT + range", "NOT arm = 'A' AND weight >= 249.8", "patients", True),
    ("IS NULL (10%)", "responder IS NULL", "patients", False),
    ("choice IN (broad)", "arm IN ('A', 'B')", "patients", False),
    ("broad", "age >= 18", "patients", False),
    ("studies by patient datapoint", "weight >= 249.8 AND study.visit = 'Baseline'", "studies", True),
]
DEEP_PAGE = 1000
CSV_QUERY = "weight >= 200"


def _database(kind: str, size: int, pg_url: str | None) -> Database:
    if kind == "sqlite":
        DATA.mkdir(parents=True, exist_ok=True)
        return Database(f"sqlite:///{DATA / f'search-{size}.db'}")
    assert pg_url, "--pg-url is needed for PostgreSQL"
    name = f"ipacs_bench_{size}"
    admin = Database(str(make_url(pg_url).set(database="postgres")), isolation_level="AUTOCOMMIT")
    with admin.engine.connect() as conn:
        if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return Database(str(make_url(pg_url).set(database=name)))


def build(database: Database, size: int, settings: Settings) -> tuple[int, Caller]:
    """The demo project with `size` patients (loaded once, then reused)."""
    upgrade_to_head(database.engine)
    with database.session(write=True) as session, session.begin():
        user_service.ensure_admin(session, "admin", PASSWORD, Passwords(settings))
        admin = session.scalars(select(User).where(User.username == "admin")).one()
        caller = Caller.from_user(admin)
        project = session.scalars(select(Project).where(Project.name == "Demo trial")).first()
        count = session.scalar(select(func.count()).select_from(Patient)) or 0
    if project is not None and count == size:
        analyze(database, only_if_missing=True)
        return project.id, caller
    if project is not None:
        raise SystemExit(f"{database.url} holds {count} patients, not {size}: remove it to rebuild")
    started = time.perf_counter()
    result = load_demo(database, caller, patients=size, batch_size=10000)
    print(f"  loaded {size} patients in {time.perf_counter() - started:.0f} s", flush=True)
    analyze(database, only_if_missing=False)
    return result.project_id, caller


def analyze(database: Database, *, only_if_missing: bool) -> None:
    """Planner statistics, as a server would have them (SQLite keeps none until ANALYZE)."""
    if database.is_sqlite:
        with database.engine.begin() as conn:
            if only_if_missing and conn.scalar(
                text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
            ):
                return
            conn.exec_driver_sql("ANALYZE")
        return
    with database.engine.connect() as conn:
        if only_if_missing:
            stale = conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_user_tables WHERE last_analyze IS NULL AND "
                    "last_autoanalyze IS NULL AND relname IN ('patients', 'datapoint_values', 'studies')"
                )
            )
            if not stale:
                return
            conn.rollback()  # the check began a transaction; VACUUM runs outside one
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")


class CpuMeter:
    """CPU seconds spent so far by this process (the app runs in its threads) and, on
    PostgreSQL, by the server processes connected to the benchmark's database (read from
    /proc: the server runs on this machine). On a shared machine a request's CPU time is
    steadier than its wall time, which includes waiting for a core."""

    def __init__(self, database: Database) -> None:
        self.database_name = None if database.is_sqlite else make_url(database.url).database
        self.tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> float:
        return time.process_time() + (self._server() if self.database_name else 0.0)

    def _server(self) -> float:
        total = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                command = (proc / "cmdline").read_bytes()
                if command.startswith(b"postgres: ") and f" {self.database_name} ".encode() in command:
                    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                    total += int(fields[11]) + int(fields[12])  # utime, stime
            except OSError:
                continue  # a process that ended meanwhile
        return total / self.tick


def timed(
    client: TestClient, meter: CpuMeter, url: str, runs: int, **kwargs: Any
) -> tuple[list[float], float, Any]:
    """Wall times of `runs` requests (after two warm-up runs), their mean CPU time, the last response."""
    samples, last, cpu = [], None, 0.0
    for i in range(runs + 2):
        if i == 2:
            cpu = meter.read()
        started = time.perf_counter()
        response = client.request(url=url, **kwargs)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.text
        last = response
        if i >= 2:  # two warm-up runs
            samples.append(elapsed)
    return samples, (meter.read() - cpu) * 1000 / runs, last


def deep_after(database: Database, caller: Caller, project_id: int, query: str, page: int) -> int:
    """The `after` id that starts page `page` of 100 (found once, outside the timing)."""
    with database.session() as session:
        plan = search_service.plan(session, caller, project_id, query, "patients")
        ids = plan.statements.full.with_only_columns(Patient.id).offset((page - 1) * 100 - 1).limit(1)
        return int(session.scalar(ids) or 0)


# (label, query, target, statement): the plans shown in the doc.
PLANS = [
    ("selective numeric range, the matching ids (page and total)", QUERIES[0][1], "patients", "page"),
    ("selective AND of three, the matching ids (page and total)", QUERIES[1][1], "patients", "page"),
    ("choice IN + range, the matching ids (page and total)", QUERIES[4][1], "patients", "page"),
    ("study condition, the matching ids (page and total)", QUERIES[3][1], "patients", "page"),
    ("broad, page (a walk in id order)", "age >= 18", "patients", "page"),
    ("broad, total", "age >= 18", "patients", "count"),
]


def explain(database: Database, caller: Caller, project_id: int, query: str, target: str, which: str) -> str:
    """The plan the database runs, with actual row counts on PostgreSQL."""
    with database.session() as session:
        plan = search_service.plan(session, caller, project_id, query, target)  # type: ignore[arg-type]
        if which == "page" and plan.statements.bounded:
            # One pass: every matching id, which is the total too (the page is then read by id).
            stmt = plan.statements.full.with_only_columns(Patient.id)
        elif which == "page":
            stmt = plan.statements.page.limit(101)
        else:
            ids = plan.statements.full.with_only_columns(Patient.id).order_by(None).subquery()
            stmt = select(func.count()).select_from(ids)
        compiled = stmt.compile(dialect=database.engine.dialect, compile_kwargs={"literal_binds": True})
        if database.is_sqlite:
            # SQLAlchemy writes an OFFSET without LIMIT as "LIMIT ? OFFSET", even with literal binds.
            sql = str(compiled).replace("LIMIT ? OFFSET", "LIMIT -1 OFFSET")
            rows = session.execute(text("EXPLAIN QUERY PLAN " + sql)).all()
            return "\n".join(f"{'  ' * _depth(rows, r)}{r[-1]}" for r in rows)
        prefix = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
        rows = session.execute(text(prefix + str(compiled))).all()
    return "\n".join(str(r[0]) for r in rows)


def _depth(rows: list[Any], row: Any) -> int:
    """Nesting depth of an EXPLAIN QUERY PLAN row (id, parent, notused, detail)."""
    parents = {r[0]: r[1] for r in rows}
    depth, parent = 0, row[1]
    while parent:
        depth, parent = depth + 1, parents.get(parent, 0)
    return depth


def csv_export(url: str, project_id: int) -> dict[str, float]:
    """Run the export in a fresh process, so its peak memory is the export's own."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.search", "--csv-child", url, str(project_id)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def csv_child(url: str, project_id: int) -> None:
    database = Database(url)
    with database.session() as session:
        admin = session.scalars(select(User).where(User.username == "admin")).one()
        plan = search_service.plan(session, Caller.from_user(admin), project_id, CSV_QUERY, "patients")
    meter = CpuMeter(database)
    started, cpu, both = time.perf_counter(), time.process_time(), meter.read()
    rows = size = 0
    for chunk in export.stream_csv(database, plan):
        rows += chunk.count(b"\n")
        size += len(chunk)
    seconds, cpu, both = time.perf_counter() - started, time.process_time() - cpu, meter.read() - both
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "rows": rows - 1,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "server_cpu_seconds": both - cpu,
        "mb": size / 1e6,
        "peak_rss_mb": peak_mb,
    }
    print(json.dumps(figures))


def run(kind: str, size: int, pg_url: str | None, runs: int) -> dict[str, Any]:
    database = _database(kind, size, pg_url)
    settings = Settings(data_dir=DATA / "server", database_url=database.url, dicom_port=0, **CHEAP_ARGON2)  # type: ignore[arg-type]
    project_id, caller = build(database, size, settings)
    app = create_app(settings, database=database)
    figures: dict[str, Any] = {"queries": {}, "load": os.getloadavg()}
    meter = CpuMeter(database)
    with TestClient(app) as client:
        client.auth = ("admin", PASSWORD)
        search = f"/api/v1.0/projects/{project_id}/search"
        for label, query, target, _ in QUERIES:
            samples, cpu, response = timed(
                client, meter, search, runs, method="POST", json={"query": query, "target": target}
            )
            total = response.json()["total"]
            figures["queries"][label] = (p50(samples), percentile(samples, 0.95), total, cpu)
            print(f"  {label}: p50 {p50(samples):.1f} ms, cpu {cpu:.1f} ms, {total} matches", flush=True)
        broad = "age >= 18"
        first, _, _ = timed(client, meter, search, runs, method="POST", json={"query": broad})
        after = deep_after(database, caller, project_id, broad, DEEP_PAGE)
        deep, _, _ = timed(client, meter, search, runs, method="POST", json={"query": broad, "after": after})
        figures["paging"] = (p50(first), p50(deep))
        values = f"/api/v1.0/projects/{project_id}/datapoints/search"
        dp, cpu, response = timed(
            client, meter, values, runs, method="GET", params={"name": "weight", "op": "ge", "value": "249.8"}
        )
        figures["datapoint_search"] = (p50(dp), percentile(dp, 0.95), response.headers["x-total-count"], cpu)
    figures["csv"] = csv_export(database.url, project_id)
    figures["plans"] = {
        label: explain(database, caller, project_id, query, target, which)
        for label, query, target, which in PLANS
    }
    database.dispose()
    return figures


def targets(results: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """The issue's targets, measured at the largest size of each database."""
    kinds = sorted({k for k, _ in results})
    largest = {kind: max(s for k, s in results if k == kind) for kind in kinds}
    selective = [label for label, _, _, is_selective in QUERIES if is_selective]

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    rows: dict[str, list[str]] = {}
    for kind in kinds:
        fig = results[(kind, largest[kind])]
        worst = max(selective, key=lambda label: fig["queries"][label][0])
        slowest = fig["queries"][worst][0]
        first, deep = fig["paging"]
        datapoint = fig["datapoint_search"][0]
        csv = fig["csv"]
        rate = csv["rows"] / csv["seconds"]
        rows.setdefault("selective", []).append(f"{slowest:.0f} ms ({worst}): {mark(slowest <= 100)}")
        rows.setdefault("paging", []).append(f"{deep / first:.2f}: {mark(deep <= 1.5 * first)}")
        rows.setdefault("datapoint", []).append(f"{datapoint:.0f} ms: {mark(datapoint <= 50)}")
        sizes = sorted(s for k, s in results if k == kind)
        if len(sizes) >= 2:
            small = results[(kind, sizes[0])]
            growth = {label: fig["queries"][label][0] / small["queries"][label][0] for label in selective}
            steepest = max(growth, key=lambda label: growth[label])
            text = f"{growth[steepest]:.1f}x ({steepest}): {mark(growth[steepest] <= 2)}"
            rows.setdefault("growth", []).append(text)
        else:
            rows.setdefault("growth", []).append("one size only")
        rows.setdefault("csv", []).append(f"{rate:,.0f} rows/s: {mark(rate >= 50_000)}")
        rows.setdefault("memory", []).append(f"{csv['peak_rss_mb']:.0f} MB: {mark(csv['peak_rss_mb'] < 300)}")
    names = {
        "selective": "selective query, first page p50 <= 100 ms (the slowest of them)",
        "paging": f"page {DEEP_PAGE} of a broad query <= 1.5x page 1 (ratio of p50s)",
        "datapoint": "datapoint search p50 <= 50 ms",
        "growth": "selective queries, largest size <= 2x the smallest (steepest)",
        "csv": "CSV export >= 50,000 rows/s",
        "memory": "CSV export peak memory < 300 MB (RSS of the exporting process)",
    }
    header = " | ".join(f"{kind}, {largest[kind]:,}" for kind in kinds)
    lines = [f"| target | {header} |", "|---" * (len(kinds) + 1) + "|"]
    lines += [f"| {names[key]} | {' | '.join(cells)} |" for key, cells in rows.items()]
    return lines


def render(results: dict[tuple[str, int], dict[str, Any]], command: str) -> str:
    lines = [f"Command: `{command}`", "", "### Targets", "", *targets(results), ""]
    for (kind, size), fig in results.items():
        lines += [
            f"### {kind}, {size:,} patients",
            "",
            f"Load average (1, 5, 15 min) as this size began: {', '.join(f'{x:.1f}' for x in fig['load'])}.",
            "",
            "| query | p50 ms | p95 ms | CPU ms | matches |",
            "|---|---|---|---|---|",
        ]
        for label, (mid, high, total, cpu) in fig["queries"].items():
            lines.append(f"| {label} | {mid:.1f} | {high:.1f} | {cpu:.1f} | {total:,} |")
        first, deep = fig["paging"]
        dmid, dhigh, dtotal, dcpu = fig["datapoint_search"]
        csv = fig["csv"]
        server = f" + {csv['server_cpu_seconds']:.1f} s of the database server's" if kind != "sqlite" else ""
        lines += [
            "",
            "CPU ms: mean CPU time per request, of the benchmark process (which runs the app, and",
            "SQLite) and of the PostgreSQL server processes serving it.",
            "",
            f"- Broad query, page 1 vs page {DEEP_PAGE} (keyset): {first:.1f} ms vs {deep:.1f} ms "
            f"(ratio {deep / first:.2f}).",
            f"- Datapoint search `weight ge 249.8`: p50 {dmid:.1f} ms, p95 {dhigh:.1f} ms, CPU {dcpu:.1f} ms "
            f"({dtotal} matches).",
            f"- CSV export `{CSV_QUERY}`: {csv['rows']:,} rows in {csv['seconds']:.1f} s = "
            f"{csv['rows'] / csv['seconds']:,.0f} rows/s; CPU: {csv['cpu_seconds']:.1f} s of the exporting "
            f"process's ({csv['rows'] / csv['cpu_seconds']:,.0f} rows per CPU second){server}; "
            f"peak RSS {csv['peak_rss_mb']:.0f} MB.",
            "",
        ]
    for kind in sorted({k for k, _ in results}):
        sizes = sorted(s for k, s in results if k == kind)
        if len(sizes) >= 2:
            small, large = results[(kind, sizes[0])], results[(kind, sizes[-1])]
            lines += [
                f"Growth on {kind}, {sizes[-1]:,} vs {sizes[0]:,} patients (p50 ratio, selective queries):",
                "",
            ]
            for label, _, _, selective in QUERIES:
                if selective:
                    ratio = large["queries"][label][0] / small["queries"][label][0]
                    lines.append(f"- {label}: {ratio:.2f}x")
            lines.append("")
    for (kind, size), fig in results.items():
        if size != max(s for k, s in results if k == kind):
            continue
        lines += [f"### Plans on {kind}, {size:,} patients", ""]
        for label, query, _, _ in PLANS:
            lines += [f"{label}: `{query}`", "", "```", fig["plans"][label], "```", ""]
    lines += [
        "What limits the targets not met, and what would move them: the next section",
        "(written by hand, for the run it names).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--databases", default="sqlite")
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--csv-child", nargs=2, metavar=("URL", "PROJECT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.csv_child:
        csv_child(args.csv_child[0], int(args.csv_child[1]))
        return
    results = {}
    for kind in args.databases.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            print(f"{kind}, {size} patients", flush=True)
            results[(kind, size)] = run(kind, size, args.pg_url, args.runs)
    shown = [a if "://" not in a else "<url>" for a in sys.argv[1:]]
    command = " ".join(["python -m bench.search", *shown])
    write_section("search", "## Search\n\n" + render(results, command))


if __name__ == "__main__":
    main()
