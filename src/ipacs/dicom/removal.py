"""Removing stored files once the rows that named them are gone.

Deleting a study, patient or project deletes its instance rows in the
request's transaction and returns their storage keys; the files go only
after that commit (a rolled-back delete must not lose a file). A file is
content-addressed, so the same key may be named again by an instance stored
meanwhile: each key is removed inside a short transaction that holds the
key's lock (`lock_storage_key`, also taken by ingest before it moves a file
into the store) and only when no instance row names it any more.

A crash between the commit and the removal leaves unreferenced files behind:
space, never a row without its file. So does a crash of ingest between its
file's rename into the store and its commit. `sweep_unreferenced` (the
`ipacs store sweep` command) finds and removes them, by the same rule and
under the same locks, so it is safe beside running servers.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipacs.db.engine import Database
from ipacs.dicom.storage import Storage, StoredObject
from ipacs.models import Instance

log = logging.getLogger("ipacs.dicom.removal")
# Files checked and removed per transaction: short transactions, few round trips.
BATCH = 200


@dataclass(frozen=True, order=True)
class StoredFile:
    """A file some deleted instance rows named: its content hash and its key in the store."""

    sha256: str
    storage_key: str


def lock_storage_key(session: Session, key: str) -> None:
    """Serialise writers of one storage key until the transaction ends.

    SQLite writers already hold the database's write lock (BEGIN IMMEDIATE);
    PostgreSQL takes a transaction-scoped advisory lock named by the key.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
    session.execute(select(func.pg_advisory_xact_lock(lock_id)))


def _named(session: Session, files: list[StoredFile]) -> set[StoredFile]:
    """Those of `files` some instance row names."""
    rows = session.execute(
        select(Instance.sha256, Instance.storage_key).where(Instance.sha256.in_([f.sha256 for f in files]))
    )
    return {StoredFile(sha256, key) for sha256, key in rows}


def _remove_batch(database: Database, storage: Storage, batch: list[StoredFile]) -> list[StoredFile]:
    with database.session(write=True) as session, session.begin():
        for file in batch:  # in key order, so two removers never deadlock
            lock_storage_key(session, file.storage_key)
        named = _named(session, batch)
        removed = [file for file in batch if file not in named]
        for file in removed:
            storage.delete(file.storage_key)
    return removed


def remove_unreferenced(database: Database, storage: Storage, files: Iterable[StoredFile]) -> int:
    """Delete each file no instance row names any more; returns how many were removed."""
    pending = sorted(set(files))
    removed = 0
    for start in range(0, len(pending), BATCH):
        removed += len(_remove_batch(database, storage, pending[start : start + BATCH]))
    if removed:
        log.info("removed %d stored files after a deletion", removed)
    return removed


@dataclass
class SweepReport:
    checked: int = 0  # files in the store
    recent: int = 0  # younger than the grace period: left alone
    unreferenced: int = 0  # older, and named by no instance row
    removed: int = 0  # of those, removed (fewer in a dry run, or when one was named again meanwhile)
    removed_bytes: int = 0


def sweep_unreferenced(
    database: Database, storage: Storage, grace_seconds: float, *, dry_run: bool = False
) -> SweepReport:
    """Remove the store's files that no instance row names and that are older than the grace period.

    Files a crash left behind: moved into the store by an ingest that never committed, or
    left by a deletion interrupted after its commit. A file an ingest is moving into the
    store right now is protected by the key's lock, which that ingest holds from before the
    rename to its commit: each file is checked again, and removed, under that lock. The
    grace period is a second guard (a rename keeps the staged file's fresh mtime), for
    writers that do not take the lock, such as an older version of the server.
    """
    cutoff = time.time() - grace_seconds
    report = SweepReport()
    candidates: list[StoredObject] = []

    def sweep(objects: list[StoredObject]) -> None:
        files = {StoredFile(o.sha256, o.key): o for o in objects}
        with database.session() as session:  # a first look without locks: most files are named
            unnamed = sorted(set(files) - _named(session, list(files)))
        report.unreferenced += len(unnamed)
        if dry_run or not unnamed:
            return
        for file in _remove_batch(database, storage, unnamed):
            report.removed += 1
            report.removed_bytes += files[file].size

    for stored in storage.list_objects():
        report.checked += 1
        if stored.modified > cutoff:
            report.recent += 1
            continue
        candidates.append(stored)
        if len(candidates) == BATCH:
            sweep(candidates)
            candidates = []
    if candidates:
        sweep(candidates)
    if report.removed:
        log.info("removed %d stored files no instance names", report.removed)
    return report
