"""Synthetic data: a demo project tree with typed datapoints, patients, values and studies.

The small default is a dataset to click through; `--patients 1000000` builds
benchmark databases. Rows are written in batches straight through the driver,
in the form each column's SQLAlchemy type stores (COPY on PostgreSQL,
executemany elsewhere): the ORM would take hours for a million patients, and
even Core's bulk insert spent half the load building statements and
parameters. The per-row audit trail of the services is replaced by one audit
event for the whole load. The project and its datapoint definitions still go
through the services.
"""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.orm import Session

from ipacs import clock
from ipacs.audit import service as audit
from ipacs.auth.caller import Caller
from ipacs.datapoints import values as typing_
from ipacs.datapoints.schemas import DatapointCreate
from ipacs.datapoints.service import create_definition
from ipacs.db.engine import Database
from ipacs.models import Datapoint, DatapointValue, Patient, Project, Study
from ipacs.projects import repository as project_repository
from ipacs.projects.schemas import ProjectCreate
from ipacs.projects.service import create_project

# The demo's datapoints, in order; `--datapoints K` takes the first K (cycling
# with numbered copies beyond ten).
DATAPOINT_KINDS: list[dict[str, Any]] = [
    {"name": "age", "type": "integer", "minimum": 0, "maximum": 120, "unit": "years"},
    {"name": "arm", "type": "choice", "choices": ["A", "B", "placebo"]},
    {"name": "weight", "type": "decimal", "minimum": 20, "maximum": 250, "unit": "kg"},
    {"name": "responder", "type": "boolean"},
    {"name": "enrolled", "type": "date"},
    {"name": "site_code", "type": "string", "pattern": "^S[0-9]{3}$"},
    {"name": "tumour_volume", "type": "decimal", "minimum": 0, "unit": "ml"},
    {"name": "ecog", "type": "integer", "minimum": 0, "maximum": 5},
    {"name": "consented_at", "type": "datetime"},
    {"name": "histology", "type": "choice", "choices": ["adeno", "squamous", "small-cell", "other"]},
]
VISITS = ("Baseline", "Week 12", "Week 24")
MODALITIES = ("MR", "CT", "PT")


@dataclass(frozen=True)
class DemoResult:
    project_id: int
    patients: int
    values: int
    studies: int


def _definitions(count: int) -> list[dict[str, Any]]:
    chosen = []
    for i in range(count):
        base = dict(DATAPOINT_KINDS[i % len(DATAPOINT_KINDS)])
        if i >= len(DATAPOINT_KINDS):
            base["name"] = f"{base['name']}_{i // len(DATAPOINT_KINDS) + 1}"
        chosen.append(base)
    return chosen


def _raw_value(kind: dict[str, Any], rng: random.Random, day0: date) -> Any:
    match kind["type"]:
        case "integer":
            return rng.randint(kind.get("minimum", 0), kind.get("maximum", 100))
        case "decimal":
            return round(rng.uniform(kind.get("minimum", 0), kind.get("maximum", 500)), 2)
        case "boolean":
            return rng.random() < 0.4
        case "date":
            return (day0 + timedelta(days=rng.randint(0, 1500))).isoformat()
        case "datetime":
            moment = datetime(2021, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 4 * 365 * 86400))
            return moment.isoformat()
        case "choice":
            return rng.choice(kind["choices"])
    return f"S{rng.randint(0, 999):03d}"


@functools.lru_cache(maxsize=1 << 17, typed=True)
def _typed_value(dp_type: str, raw: Any, choices: tuple[str, ...]) -> typing_.TypedValue:
    """typing_.typed_value, remembered: most demo values recur (ages, choices, days, ...)."""
    return typing_.typed_value(dp_type, raw, choices=list(choices) or None)


def create_demo_project(
    session: Session, admin: Caller, name: str, datapoints: int
) -> tuple[Project, list[Datapoint]]:
    """The demo tree (a trial with two sites) and its definitions, through the services."""
    project = create_project(session, admin, ProjectCreate(name=name, description="Synthetic demo data"))
    for site in ("Site A", "Site B"):
        create_project(session, admin, ProjectCreate(name=site, parent_id=project.id))
    definitions = [
        create_definition(session, admin, project.id, DatapointCreate(**kind))
        for kind in _definitions(datapoints)
    ]
    return project, definitions


def load_demo(
    database: Database,
    admin: Caller,
    *,
    name: str = "Demo trial",
    patients: int = 200,
    datapoints: int = 10,
    batch_size: int = 5000,
    seed: int = 42,
    progress: Callable[[int], None] | None = None,
) -> DemoResult:
    """Create the demo project and bulk-load `patients` patients with values and one study each."""
    rng = random.Random(seed)
    with database.session(write=True) as session, session.begin():
        project, definitions = create_demo_project(session, admin, name, datapoints)
        sites = [p for p in project_repository.subtree_ids(session, project.id) if p != project.id]
        project_id = project.id
        kinds = {d.id: (d, _definitions(datapoints)[i]) for i, d in enumerate(definitions)}
    next_patient = _next_id(database, Patient)
    next_study = _next_id(database, Study)
    loaded_values = 0
    for start in range(0, patients, batch_size):
        count = min(batch_size, patients - start)
        rows, values, studies = _batch(
            rng, start, count, next_patient + start, next_study + start, sites, kinds, admin
        )
        with database.session(write=True) as session, session.begin():
            for model, table_rows in ((Patient, rows), (DatapointValue, values), (Study, studies)):
                _insert(session, model.metadata.tables[model.__tablename__], table_rows)
        loaded_values += len(values)
        if progress:
            progress(count)
    with database.session(write=True) as session, session.begin():
        _fix_sequences(session)
        audit.record(
            session,
            admin,
            "demo_load",
            "project",
            entity_id=project_id,
            project_id=project_id,
            after={"patients": patients, "datapoint_values": loaded_values, "studies": patients},
        )
    return DemoResult(project_id, patients, loaded_values, patients)


def _batch(
    rng: random.Random,
    start: int,
    count: int,
    first_patient: int,
    first_study: int,
    sites: list[int],
    kinds: dict[int, tuple[Datapoint, dict[str, Any]]],
    admin: Caller,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    now = clock.now()
    day0 = date(2021, 1, 1)
    patients, values, studies = [], [], []
    for i in range(count):
        pk = first_patient + i
        project_id = sites[(start + i) % len(sites)]
        patients.append(
            {
                "id": pk,
                "uuid": uuid.UUID(int=rng.getrandbits(128)),
                "project_id": project_id,
                "patient_id": f"DEMO-{start + i + 1:07d}",
                "patient_name": f"Subject^{start + i + 1}",
                "birth_date": date(1940, 1, 1) + timedelta(days=rng.randint(0, 60 * 365)),
                "sex": rng.choice("MFO"),
                "created_at": now,
                "updated_at": now,
                "version": 1,
                "creator_id": admin.id,
            }
        )
        for datapoint, kind in kinds.values():
            if rng.random() < 0.1:
                continue  # some values missing, so IS NULL has something to find
            raw = _raw_value(kind, rng, day0)
            choices = tuple(kind.get("choices") or ())
            if kind["type"] == "datetime":  # all distinct: nothing to remember
                typed = typing_.typed_value("datetime", raw)
            else:
                typed = _typed_value(kind["type"], raw, choices)
            values.append(
                {
                    "uuid": uuid.UUID(int=rng.getrandbits(128)),
                    "datapoint_id": datapoint.id,
                    "patient_id": pk,
                    "value": typed.value,
                    "num_value": typed.num,
                    "text_value": typed.text,
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                    "creator_id": admin.id,
                    "updated_by_id": admin.id,
                }
            )
        studies.append(
            {
                "id": first_study + i,
                "uuid": uuid.UUID(int=rng.getrandbits(128)),
                "study_instance_uid": f"2.25.{uuid.UUID(int=rng.getrandbits(128)).int}",
                "patient_id": pk,
                "project_id": project_id,
                "study_date": day0 + timedelta(days=rng.randint(0, 1500)),
                "modalities": rng.choice(MODALITIES),
                "visit": rng.choice(VISITS),
                "status": "complete",
                "series_count": 0,
                "instance_count": 0,
                "size_bytes": 0,
                "created_at": now,
                "updated_at": now,
                "version": 1,
                "creator_id": admin.id,
            }
        )
    return patients, values, studies


def _insert(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` (all with the same keys) through the driver, in the session's transaction."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    statement = insert(table).compile(dialect=dialect, column_keys=list(rows[0]))
    # The columns in the order the statement binds them (SQLite's are positional), or as given.
    columns = list(statement.positiontup or rows[0])
    # Each value in the form its column's type binds it (UUIDs, datetimes, JSON, ...), a
    # column at a time; a column holding one value throughout (created_at) is converted once.
    table_columns = [[row[name] for row in rows] for name in columns]
    for index, name in enumerate(columns):
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is None:
            continue
        first = table_columns[index][0]
        if all(value is first for value in table_columns[index]):
            table_columns[index] = [process(first)] * len(rows)
        else:
            table_columns[index] = list(map(process, table_columns[index]))
    converted = list(zip(*table_columns, strict=True))
    driver = connection.connection.driver_connection
    assert driver is not None
    if dialect.name != "postgresql":
        driver.cursor().executemany(str(statement), converted)
        return
    from psycopg import sql

    copy_rows = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with driver.cursor() as cursor, cursor.copy(copy_rows) as copy:
        for row in converted:
            copy.write_row(row)


def _next_id(database: Database, model: type[Patient] | type[Study]) -> int:
    with database.session() as session:
        return (session.scalar(select(func.max(model.id))) or 0) + 1


def _fix_sequences(session: Session) -> None:
    """Explicit ids bypass PostgreSQL's sequences: move them past the new rows."""
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(
        text("SELECT setval(pg_get_serial_sequence('patients', 'id'), (SELECT MAX(id) FROM patients))")
    )
    session.execute(
        text("SELECT setval(pg_get_serial_sequence('studies', 'id'), (SELECT MAX(id) FROM studies))")
    )
