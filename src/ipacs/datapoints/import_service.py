"""Bulk import of datapoint values: every cell is checked before anything is written.

A request holds rows of `{patient_id, values: {name: value}}`. The whole
request is validated first; if any cell is wrong, it answers 400 listing every
bad cell (`rows[3].age`) and writes nothing. Then each value is stored through
`value_service.write_value`, the one way a value is stored (validated,
versioned, audited), and missing patients are created through
`register_patient`, only when the request asks for it.

Patients are found by patient_id in the project's subtree; the columns must
name datapoints that apply in the project (its own and its ancestors'), and so
apply to every patient found there. A `null` value leaves the stored value as
it is. The request is one transaction: a client importing a large file sends
it in batches, each atomic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipacs.auth.caller import Caller
from ipacs.authz.access import require_role
from ipacs.authz.roles import Role
from ipacs.datapoints import repository as definitions
from ipacs.datapoints import values as typing_
from ipacs.datapoints.import_schemas import ImportRequest, ImportRow, ImportSummaryOut
from ipacs.datapoints.value_service import is_unchanged, write_value
from ipacs.errors import InvalidRequest
from ipacs.models import Datapoint, DatapointValue, Patient, Project, ProjectClosure
from ipacs.patients.schemas import PATIENT_ID_PATTERN, PatientEmpty
from ipacs.patients.service import register_patient

# Bound parameters per IN (...) list: well under every database's limit.
LOOKUP_CHUNK = 500


@dataclass
class _Cell:
    datapoint: Datapoint
    raw: Any
    typed: Any


@dataclass
class _Row:
    patient_id: str
    patient: Patient | None  # None: to be created
    cells: list[_Cell] = field(default_factory=list)


@dataclass
class _Check:
    """What the validation pass found: the rows to write, or the errors."""

    project: Project
    datapoints: dict[str, Datapoint]
    patients: dict[str, list[Patient]]
    errors: list[dict[str, str]] = field(default_factory=list)
    rows: list[_Row] = field(default_factory=list)
    empty: int = 0

    def fail(self, field_name: str, message: str) -> None:
        self.errors.append({"field": field_name, "message": message})


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), LOOKUP_CHUNK):
        yield items[start : start + LOOKUP_CHUNK]


def patients_in_subtree(
    session: Session, project_id: int, patient_ids: Iterable[str]
) -> dict[str, list[Patient]]:
    """Patients of the project and its subprojects by patient_id (several when ambiguous)."""
    subtree = select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == project_id)
    found: dict[str, list[Patient]] = {}
    for chunk in _chunks(sorted(set(patient_ids))):
        stmt = select(Patient).where(Patient.project_id.in_(subtree), Patient.patient_id.in_(chunk))
        for patient in session.scalars(stmt.order_by(Patient.id)):
            found.setdefault(patient.patient_id, []).append(patient)
    return found


def _existing_values(session: Session, patients: Iterable[Patient]) -> dict[tuple[int, int], DatapointValue]:
    by_key: dict[tuple[int, int], DatapointValue] = {}
    for chunk in _chunks([p.id for p in patients]):
        # Without the creator/editor joins of value_repository: write_value needs neither.
        for value in session.scalars(select(DatapointValue).where(DatapointValue.patient_id.in_(chunk))):
            by_key[(value.patient_id, value.datapoint_id)] = value
    return by_key


def _check_patient(check: _Check, index: int, row: ImportRow, create: bool, seen: dict[str, int]) -> bool:
    where = f"rows[{index}].patient_id"
    if not re.fullmatch(PATIENT_ID_PATTERN, row.patient_id):
        check.fail(where, "a patient_id is 1 to 64 characters, without backslash or control characters")
        return False
    if row.patient_id in seen:
        check.fail(where, f"patient {row.patient_id!r} appears again (first in rows[{seen[row.patient_id]}])")
        return False
    seen[row.patient_id] = index
    matches = check.patients.get(row.patient_id, [])
    if len(matches) > 1:
        projects = ", ".join(str(p.project_id) for p in matches)
        check.fail(
            where,
            f"patient {row.patient_id!r} exists in several subprojects (projects {projects}); "
            "import into the subproject instead",
        )
        return False
    if not matches and not create:
        check.fail(
            where,
            f"no patient {row.patient_id!r} in project {check.project.name!r} or its subprojects "
            "(create_patients: true creates it)",
        )
        return False
    return True


def _check_cells(check: _Check, index: int, row: ImportRow) -> list[_Cell]:
    cells: list[_Cell] = []
    named: dict[int, str] = {}
    for name, raw in row.values.items():
        where = f"rows[{index}].{name}"
        datapoint = check.datapoints.get(name.lower())
        if datapoint is None:
            check.fail(where, f"no datapoint named {name!r} applies in project {check.project.name!r}")
            continue
        if datapoint.id in named:
            check.fail(where, f"{name!r} names the same datapoint as {named[datapoint.id]!r}")
            continue
        named[datapoint.id] = name
        if raw is None:
            check.empty += 1
            continue
        try:
            typed = typing_.typed_value(
                datapoint.type,
                raw,
                choices=datapoint.choices,
                minimum=datapoint.minimum,
                maximum=datapoint.maximum,
                pattern=datapoint.pattern,
            )
        except typing_.InvalidValue as exc:
            check.fail(where, f"{exc.message} ({exc.rule})")
            continue
        cells.append(_Cell(datapoint, raw, typed.value))
    return cells


def check_rows(session: Session, caller: Caller, project_id: int, body: ImportRequest) -> _Check:
    """Validate every row and cell; collect every error rather than stopping at the first."""
    project = require_role(session, caller, project_id, Role.USER)
    check = _Check(
        project=project,
        datapoints={d.name_key: d for d in definitions.all_applicable(session, project_id)},
        patients=patients_in_subtree(session, project_id, (r.patient_id for r in body.rows)),
    )
    seen: dict[str, int] = {}
    for index, row in enumerate(body.rows):
        patient_ok = _check_patient(check, index, row, body.create_patients, seen)
        cells = _check_cells(check, index, row)
        if patient_ok:
            matches = check.patients.get(row.patient_id, [])
            check.rows.append(_Row(row.patient_id, matches[0] if matches else None, cells))
    return check


def import_values(session: Session, caller: Caller, project_id: int, body: ImportRequest) -> ImportSummaryOut:
    """Validate the whole request, then (unless dry_run) write it; all or nothing."""
    check = check_rows(session, caller, project_id, body)
    if check.errors:
        raise InvalidRequest(f"{len(check.errors)} invalid cells; nothing was written", details=check.errors)
    existing = _existing_values(session, (r.patient for r in check.rows if r.patient is not None))
    summary = ImportSummaryOut(
        dry_run=body.dry_run,
        rows=len(body.rows),
        patients_created=0,
        values_created=0,
        values_updated=0,
        values_unchanged=0,
        cells_empty=check.empty,
    )
    for row in check.rows:
        patient = row.patient
        if patient is None:
            summary.patients_created += 1
            if not body.dry_run:
                patient = register_patient(
                    session, caller, check.project, PatientEmpty(patient_id=row.patient_id)
                )
        for cell in row.cells:
            before = existing.get((patient.id, cell.datapoint.id)) if patient is not None else None
            if is_unchanged(cell.datapoint.type, before, cell.typed):
                summary.values_unchanged += 1
                continue
            if before is None:
                summary.values_created += 1
            else:
                summary.values_updated += 1
            if patient is not None and not body.dry_run:
                write_value(session, caller, patient, cell.datapoint, cell.raw, before)
    return summary
