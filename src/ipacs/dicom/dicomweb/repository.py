"""DICOMweb queries. Every one is joined to the projects the caller may read.

A study is visible when its patient's project is readable (the REST API's
rule: studies are reached through their patient), and, on a project's own
DICOMweb root, when that patient lives in the project's subtree. Studies
without any stored instance (records made through the REST API) are not
DICOM studies yet and are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select
from sqlalchemy.orm import Session

from ipacs.auth.caller import Caller
from ipacs.authz.access import readable_project_ids
from ipacs.db.like import LIKE_ESCAPE, escape_like
from ipacs.dicom.dicomweb.qido import Kind, Match, QidoQuery
from ipacs.models import Instance, Patient, ProjectClosure, Series, Study


@dataclass(frozen=True)
class Scope:
    """Who asks, and through which root: all readable projects, or one project's subtree."""

    caller: Caller
    project_id: int | None = None


_COLUMNS: dict[str, Any] = {
    "StudyInstanceUID": Study.study_instance_uid,
    "PatientID": Patient.patient_id,
    "PatientName": Patient.patient_name,
    "PatientBirthDate": Patient.birth_date,
    "PatientSex": Patient.sex,
    "StudyDate": Study.study_date,
    "AccessionNumber": Study.accession_number,
    "StudyDescription": Study.description,
    "ModalitiesInStudy": Study.modalities,
    "SeriesInstanceUID": Series.series_instance_uid,
    "Modality": Series.modality,
    "SeriesNumber": Series.series_number,
    "SeriesDescription": Series.series_description,
    "BodyPartExamined": Series.body_part_examined,
    "SOPInstanceUID": Instance.sop_instance_uid,
    "SOPClassUID": Instance.sop_class_uid,
    "InstanceNumber": Instance.instance_number,
}

STUDY_ORDER = (Study.study_date.desc().nulls_last(), Study.study_time.desc().nulls_last(), Study.id.desc())
SERIES_ORDER = (Series.series_number.asc().nulls_last(), Series.id.asc())
INSTANCE_ORDER = (*SERIES_ORDER, Instance.instance_number.asc().nulls_last(), Instance.id.asc())


def visible(scope: Scope) -> ColumnElement[bool]:
    """The permission filter: the patient's project is one the caller may read (and in scope)."""
    condition = and_(Patient.project_id.in_(readable_project_ids(scope.caller)), Study.instance_count > 0)
    if scope.project_id is not None:
        subtree = select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == scope.project_id)
        condition = and_(condition, Patient.project_id.in_(subtree))
    return condition


def _wildcard(value: str) -> str | None:
    """A LIKE pattern for a value with `*` or `?` wildcards, or None when it has none."""
    if "*" not in value and "?" not in value:
        return None
    return escape_like(value).replace("*", "%").replace("?", "_")


def _text(column: Any, value: str, ignore_case: bool) -> ColumnElement[bool]:
    pattern = _wildcard(value)
    if pattern is not None:
        # Wildcard matches ignore case on every key: SQLite's LIKE cannot do otherwise.
        return func.lower(column).like(pattern.lower(), escape=LIKE_ESCAPE)
    if ignore_case:
        return func.lower(column) == value.lower()
    return column == value  # type: ignore[no-any-return]


def _modalities(values: Sequence[str]) -> ColumnElement[bool]:
    # Study.modalities is "CT\\MR": wrap it in separators and look for "\\CT\\".
    wrapped = func.upper(literal("\\") + Study.modalities + literal("\\"))
    return or_(*(wrapped.like(f"%{escape_like(chr(92) + v + chr(92))}%", escape=LIKE_ESCAPE) for v in values))


def condition(match: Match) -> ColumnElement[bool]:
    column = _COLUMNS[match.key.keyword]
    match match.key.kind:
        case Kind.UID:
            return column.in_(match.values)  # type: ignore[no-any-return]
        case Kind.CODES:
            return func.upper(column).in_(match.values)
        case Kind.MODALITIES:
            return _modalities(match.values)
        case Kind.DATE:
            parts = []
            if match.start is not None:
                parts.append(column >= match.start)
            if match.end is not None:
                parts.append(column <= match.end)
            return and_(*parts)
        case Kind.NUMBER:
            return column == match.number  # type: ignore[no-any-return]
        case Kind.TEXT | Kind.TEXT_CI:
            return _text(column, match.values[0], match.key.kind is Kind.TEXT_CI)


def _page(
    session: Session, stmt: Select[*tuple[Any, ...]], query: QidoQuery, order: Iterable[Any]
) -> tuple[list[Any], int]:
    stmt = stmt.where(*(condition(m) for m in query.matches))
    rows = session.execute(stmt.order_by(*order).limit(query.limit).offset(query.offset)).all()
    offset = query.offset or 0
    if (query.limit is None or len(rows) < query.limit) and (rows or not offset):
        return [tuple(row) for row in rows], offset + len(rows)  # the page ends the list: no count
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    return [tuple(row) for row in rows], total


def _studies() -> Select[Study, Patient]:
    return select(Study, Patient).join(Patient, Patient.id == Study.patient_id)


def _series() -> Select[Series, Study, Patient]:
    return (
        select(Series, Study, Patient)
        .join(Study, Study.id == Series.study_id)
        .join(Patient, Patient.id == Study.patient_id)
    )


def _instances() -> Select[Instance, Series, Study, Patient]:
    return (
        select(Instance, Series, Study, Patient)
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id)
        .join(Patient, Patient.id == Study.patient_id)
    )


def search_studies(session: Session, scope: Scope, query: QidoQuery) -> tuple[list[Any], int]:
    """(Study, Patient) rows matching the query, newest study first, and the total."""
    return _page(session, _studies().where(visible(scope)), query, STUDY_ORDER)


def search_series(
    session: Session, scope: Scope, query: QidoQuery, study_id: int | None = None
) -> tuple[list[Any], int]:
    """(Series, Study, Patient) rows, in series number order, and the total."""
    stmt = _series().where(visible(scope))
    if study_id is not None:
        stmt = stmt.where(Study.id == study_id)
    return _page(session, stmt, query, (*STUDY_ORDER, *SERIES_ORDER) if study_id is None else SERIES_ORDER)


def search_instances(
    session: Session,
    scope: Scope,
    query: QidoQuery,
    study_id: int | None = None,
    series_id: int | None = None,
) -> tuple[list[Any], int]:
    """(Instance, Series, Study, Patient) rows, in series then instance order, and the total."""
    stmt = _instances().where(visible(scope))
    if study_id is not None:
        stmt = stmt.where(Study.id == study_id)
    if series_id is not None:
        stmt = stmt.where(Series.id == series_id)
    return _page(
        session, stmt, query, INSTANCE_ORDER if study_id is not None else (*STUDY_ORDER, *INSTANCE_ORDER)
    )


def find_study(session: Session, scope: Scope, study_uid: str) -> tuple[Study, Patient] | None:
    row = session.execute(_studies().where(visible(scope), Study.study_instance_uid == study_uid)).first()
    if row is None:
        return None
    study, patient = row
    return study, patient


def find_series(session: Session, scope: Scope, study_uid: str, series_uid: str) -> Series | None:
    return session.scalars(
        _series()
        .where(
            visible(scope), Study.study_instance_uid == study_uid, Series.series_instance_uid == series_uid
        )
        .with_only_columns(Series)
    ).first()


def instances_to_retrieve(
    session: Session, scope: Scope, study_uid: str, series_uid: str | None, sop_uid: str | None
) -> list[Instance]:
    """The visible instances of a study, series or single instance, in retrieval order."""
    stmt = _instances().where(visible(scope), Study.study_instance_uid == study_uid)
    if series_uid is not None:
        stmt = stmt.where(Series.series_instance_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(Instance.sop_instance_uid == sop_uid)
    return list(session.scalars(stmt.with_only_columns(Instance).order_by(*INSTANCE_ORDER)))


def first_instance_keys(session: Session, column: Any, ids: Sequence[int]) -> dict[int, str]:
    """For each study (or series) id, the storage key of its first stored instance."""
    if not ids:
        return {}
    first = select(func.min(Instance.id)).where(column.in_(ids)).group_by(column)
    rows = session.execute(select(column, Instance.storage_key).where(Instance.id.in_(first)))
    return {row[0]: row[1] for row in rows}
