"""DICOMweb rules: which root the caller came through, what it may see, what to retrieve.

Every lookup goes through repository.py's `visible` filter, so a study the
caller cannot read answers 404 exactly like one that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pydicom
from sqlalchemy.orm import Session

from ipacs.auth.caller import Caller
from ipacs.authz.access import require_role
from ipacs.authz.roles import Role
from ipacs.dicom.dicomweb import attributes, repository
from ipacs.dicom.dicomweb.json_model import Attributes, JsonAttributes, element_json, tag_key
from ipacs.dicom.dicomweb.qido import QidoQuery
from ipacs.dicom.dicomweb.repository import Scope
from ipacs.dicom.header import MAX_UID_LENGTH
from ipacs.dicom.storage import FileStore
from ipacs.errors import NotFound
from ipacs.models import Instance


@dataclass(frozen=True)
class SearchResult:
    items: list[JsonAttributes]
    total: int
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class StoredFile:
    storage_key: str
    sop_instance_uid: str
    transfer_syntax_uid: str | None
    size_bytes: int


def open_scope(session: Session, caller: Caller, project_id: int | None) -> Scope:
    """The caller's view: every readable project, or one project's subtree (404 if unreadable)."""
    if project_id is not None:
        require_role(session, caller, project_id, Role.VIEWER)
    return Scope(caller, project_id)


def _included(storage: FileStore, key: str | None, attrs: Attributes, include: frozenset[int]) -> None:
    """Add `includefield` attributes the index lacks, read from a stored file's header."""
    missing = sorted(tag for tag in include if not attrs.has(tag))
    if not missing or key is None:
        return
    with storage.open(key) as f:
        ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=missing)
    for element in ds:
        if element.tag in missing and (converted := element_json(element)) is not None:
            attrs.update({tag_key(element.tag): converted})


def _result(
    storage: FileStore,
    query: QidoQuery,
    rows: list[Any],
    total: int,
    build: Callable[[Any], Attributes],
    file_of: Callable[[Any], str | None],
) -> SearchResult:
    items = []
    for row in rows:
        attrs = build(row)
        if query.include:
            _included(storage, file_of(row), attrs, query.include)
        items.append(attrs.as_json())
    warnings = list(query.warnings)
    if query.offset + len(rows) < total:
        warnings.append("There are additional results that can be requested")
    return SearchResult(items, total, tuple(warnings))


def _first_files(session: Session, column: Any, ids: Sequence[int], query: QidoQuery) -> dict[int, str]:
    return repository.first_instance_keys(session, column, ids) if query.include else {}


def search_studies(
    session: Session, storage: FileStore, scope: Scope, query: QidoQuery, root: str
) -> SearchResult:
    rows, total = repository.search_studies(session, scope, query)
    files = _first_files(session, Instance.study_id, [study.id for study, _ in rows], query)
    return _result(
        storage,
        query,
        rows,
        total,
        lambda row: attributes.study_result(root, row[0], row[1]),
        lambda row: files.get(row[0].id),
    )


def _storable(*uids: str | None) -> bool:
    """Could these UIDs be stored at all? (A NUL would make PostgreSQL fail, not answer 404.)"""
    return all(uid is None or (len(uid) <= MAX_UID_LENGTH and "\x00" not in uid) for uid in uids)


def find_study_id(session: Session, scope: Scope, study_uid: str) -> int:
    found = repository.find_study(session, scope, study_uid) if _storable(study_uid) else None
    if found is None:
        raise NotFound(f"No study {study_uid}")
    return found[0].id


def search_series(
    session: Session, storage: FileStore, scope: Scope, query: QidoQuery, root: str, study_uid: str | None
) -> SearchResult:
    study_id = find_study_id(session, scope, study_uid) if study_uid is not None else None
    rows, total = repository.search_series(session, scope, query, study_id)
    files = _first_files(session, Instance.series_id, [series.id for series, *_ in rows], query)
    return _result(
        storage,
        query,
        rows,
        total,
        lambda row: attributes.series_result(root, row[0], row[1], row[2], with_study=study_id is None),
        lambda row: files.get(row[0].id),
    )


def search_instances(
    session: Session,
    storage: FileStore,
    scope: Scope,
    query: QidoQuery,
    root: str,
    study_uid: str | None,
    series_uid: str | None,
) -> SearchResult:
    study_id = series_id = None
    if study_uid is not None:
        study_id = find_study_id(session, scope, study_uid)
        if series_uid is not None:
            found = _storable(series_uid)
            series = repository.find_series(session, scope, study_uid, series_uid) if found else None
            if series is None:
                raise NotFound(f"No series {series_uid} in study {study_uid}")
            series_id = series.id
    rows, total = repository.search_instances(session, scope, query, study_id, series_id)
    return _result(
        storage,
        query,
        rows,
        total,
        lambda row: attributes.instance_result(root, row[0], row[1], row[2], row[3], study_id is None),
        lambda row: row[0].storage_key,
    )


def files_to_retrieve(
    session: Session, scope: Scope, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> list[StoredFile]:
    """The stored files of a study, series or instance the caller may read; 404 when none."""
    instances = []
    if _storable(study_uid, series_uid, sop_uid):
        instances = repository.instances_to_retrieve(session, scope, study_uid, series_uid, sop_uid)
    if not instances:
        what = f"instance {sop_uid}" if sop_uid else f"series {series_uid}" if series_uid else "study"
        raise NotFound(f"No {what} in study {study_uid}")
    return [
        StoredFile(i.storage_key, i.sop_instance_uid, i.transfer_syntax_uid, i.size_bytes) for i in instances
    ]
