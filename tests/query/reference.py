"""A small dataset model, its insertion, and a Python reference evaluator of the StringQuery semantics.

The evaluator works on plain Python rows, written from the semantics in
docs/query-language.md, not from the compiler: what the database answers
for a compiled query must equal what it computes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipacs.datapoints.values import typed_value
from ipacs.models import Datapoint, DatapointValue, Patient, Project, Study
from ipacs.query import QuerySchema, compile_query, parse
from ipacs.query.ast import And, Comparison, Contains, InList, IsNull, Node, Not, Or

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

# name, type, choices: one datapoint of every type
DATAPOINTS: list[tuple[str, str, list[str] | None]] = [
    ("age", "integer", None),
    ("weight", "decimal", None),
    ("responder", "boolean", None),
    ("arm", "choice", ["A", "B", "C"]),
    ("note", "string", None),
    ("visit_date", "date", None),
    ("seen_at", "datetime", None),
]
DATAPOINT_TYPES = {name: kind for name, kind, _ in DATAPOINTS}

PATIENT_ATTRIBUTES = {
    "patient_id": "string",
    "patient_name": "string",
    "birth_date": "date",
    "sex": "choice",
    "created_at": "datetime",
    "updated_at": "datetime",
}
STUDY_ATTRIBUTES = {
    "study_instance_uid": "string",
    "accession_number": "string",
    "description": "string",
    "visit": "string",
    "status": "string",
    "study_time": "string",
    "study_date": "date",
    "modalities": "modalities",
    "series_count": "integer",
    "instance_count": "integer",
    "size_bytes": "integer",
    "created_at": "datetime",
}


@dataclass
class StudyRow:
    uid: str
    modalities: str = ""
    study_date: date | None = None
    study_time: str | None = None
    accession_number: str | None = None
    description: str | None = None
    visit: str | None = None
    status: str | None = None
    series_count: int = 0
    instance_count: int = 0
    size_bytes: int = 0
    created_at: datetime = T0

    @property
    def study_instance_uid(self) -> str:
        return self.uid


@dataclass
class PatientRow:
    patient_id: str
    patient_name: str | None = None
    birth_date: date | None = None
    sex: str | None = None
    created_at: datetime = T0
    updated_at: datetime = T0
    values: dict[str, Any] = field(default_factory=dict)  # datapoint name -> raw value
    studies: list[StudyRow] = field(default_factory=list)


@dataclass
class Loaded:
    session: Session
    schema: QuerySchema
    project_id: int
    patients: list[PatientRow]

    def db_patients(self, text: str) -> set[str]:
        where = compile_query(text, self.schema, "patients")
        query = select(Patient.patient_id).where(Patient.project_id == self.project_id, where)
        return set(self.session.scalars(query))

    def db_studies(self, text: str) -> set[str]:
        where = compile_query(text, self.schema, "studies")
        query = (
            select(Study.study_instance_uid)
            .join(Patient, Patient.id == Study.patient_id)
            .where(Patient.project_id == self.project_id, where)
        )
        return set(self.session.scalars(query))

    def expected_patients(self, text: str) -> set[str]:
        tree = parse(text)
        return {p.patient_id for p in self.patients if patient_matches(tree, p)}

    def expected_studies(self, text: str) -> set[str]:
        tree = parse(text)
        return {s.uid for p in self.patients for s in p.studies if study_matches(tree, p, s)}


def load(session: Session, patients: list[PatientRow]) -> Loaded:
    """Insert a project with the DATAPOINTS and these patients; flushed, not committed."""
    project = Project(name=f"query-{uuid.uuid4().hex[:8]}", description="")
    session.add(project)
    session.flush()
    definitions = {
        name: Datapoint(project_id=project.id, name=name, name_key=name.lower(), type=kind, choices=choices)
        for name, kind, choices in DATAPOINTS
    }
    rows = [
        Patient(
            project_id=project.id,
            patient_id=p.patient_id,
            patient_name=p.patient_name,
            birth_date=p.birth_date,
            sex=p.sex,
            created_at=p.created_at,
            updated_at=p.updated_at,
        )
        for p in patients
    ]
    session.add_all([*definitions.values(), *rows])
    session.flush()
    for p, row in zip(patients, rows, strict=True):
        for name, raw in p.values.items():
            definition = definitions[name]
            typed = typed_value(definition.type, raw, choices=definition.choices)
            session.add(
                DatapointValue(
                    datapoint_id=definition.id,
                    patient_id=row.id,
                    value=typed.value,
                    num_value=typed.num,
                    text_value=typed.text,
                )
            )
        for s in p.studies:
            session.add(
                Study(
                    study_instance_uid=s.uid,
                    patient_id=row.id,
                    project_id=project.id,
                    accession_number=s.accession_number,
                    study_date=s.study_date,
                    study_time=s.study_time,
                    description=s.description,
                    modalities=s.modalities,
                    visit=s.visit,
                    status=s.status,
                    series_count=s.series_count,
                    instance_count=s.instance_count,
                    size_bytes=s.size_bytes,
                    created_at=s.created_at,
                )
            )
    session.flush()
    return Loaded(session, QuerySchema(definitions.values()), project.id, patients)


# --- the reference evaluator -------------------------------------------------

Scope = Literal["datapoint", "patient", "study"]


def scope_of(name: str) -> tuple[Scope, str, str]:
    """(scope, key, type) of a field name; names are case-insensitive."""
    key = name.lower()
    if key.startswith("patient."):
        return "patient", key.removeprefix("patient."), PATIENT_ATTRIBUTES[key.removeprefix("patient.")]
    if key.startswith("study."):
        return "study", key.removeprefix("study."), STUDY_ATTRIBUTES[key.removeprefix("study.")]
    return "datapoint", key, DATAPOINT_TYPES[key]


def patient_matches(node: Node, patient: PatientRow) -> bool:
    """Target "patients": study conditions chained by AND / OR at one level share one study."""
    match node:
        case Not(operand=operand):
            return not patient_matches(operand, patient)
        case And(operands=operands) | Or(operands=operands):
            combine: Callable[[Iterable[bool]], bool] = all if isinstance(node, And) else any
            about_studies = [o for o in operands if only_studies(o)]
            results = [patient_matches(o, patient) for o in operands if not only_studies(o)]
            if about_studies:
                results.append(
                    any(combine(study_matches(o, patient, s) for o in about_studies) for s in patient.studies)
                )
            return combine(results)
        case _:
            if scope_of(node.field.name)[0] == "study":
                return any(study_matches(node, patient, s) for s in patient.studies)
            return condition_holds(node, patient, None)


def only_studies(node: Node) -> bool:
    match node:
        case And(operands=operands) | Or(operands=operands):
            return all(only_studies(o) for o in operands)
        case Not():
            return False
        case _:
            return scope_of(node.field.name)[0] == "study"


def study_matches(node: Node, patient: PatientRow, study: StudyRow) -> bool:
    """Target "studies" (and one study, inside a patient's "has a study"): plain boolean logic."""
    match node:
        case Not(operand=operand):
            return not study_matches(operand, patient, study)
        case And(operands=operands):
            return all(study_matches(o, patient, study) for o in operands)
        case Or(operands=operands):
            return any(study_matches(o, patient, study) for o in operands)
        case _:
            return condition_holds(node, patient, study)


def condition_holds(
    node: Comparison | InList | IsNull | Contains, patient: PatientRow, study: StudyRow | None
) -> bool:
    scope, key, kind = scope_of(node.field.name)
    raw: Any
    if scope == "datapoint":
        raw = patient.values.get(key)
    elif scope == "patient":
        raw = getattr(patient, key)
    else:
        assert study is not None
        raw = getattr(study, key)
    value = as_python(kind, raw)
    missing = value is None or value == []
    match node:
        case IsNull(negated=negated):
            return missing != negated
        case _ if missing:
            return False  # a missing value satisfies no comparison, not even !=
        case Comparison(op=op, value=lit):
            return compare(kind, value, op, literal_python(kind, lit.value))
        case InList(values=items):
            return any(compare(kind, value, "=", literal_python(kind, item.value)) for item in items)
        case Contains(value=lit):
            needle = ascii_lower(str(lit.value))
            texts = value if kind == "modalities" else [value]
            return any(needle in ascii_lower(text) for text in texts)
    raise AssertionError(node)


def as_python(kind: str, raw: Any) -> Any:
    """A stored value or a literal, as a Python value that compares naturally."""
    if raw is None:
        return None
    match kind:
        case "integer" | "decimal":
            return float(raw)
        case "date":
            return raw if isinstance(raw, date) else date.fromisoformat(raw)
        case "datetime":
            moment = raw if isinstance(raw, datetime) else datetime.fromisoformat(raw.replace("Z", "+00:00"))
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        case "modalities":
            return raw.split("\\") if raw else []
        case _:
            return raw


def literal_python(kind: str, raw: Any) -> Any:
    # A modality literal is one modality, not a list.
    return raw if kind == "modalities" else as_python(kind, raw)


def compare(kind: str, value: Any, op: str, other: Any) -> bool:
    if kind == "modalities":
        has = any(m.lower() == other.lower() for m in value)
        return has if op == "=" else not has
    match op:
        case "=":
            return bool(value == other)
        case "!=":
            return bool(value != other)
        case "<":
            return bool(value < other)
        case "<=":
            return bool(value <= other)
        case ">":
            return bool(value > other)
        case ">=":
            return bool(value >= other)
    raise AssertionError(op)


def ascii_lower(text: str) -> str:
    # SQLite's lower() folds ASCII letters only; the datasets keep other letters lower-case.
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)
