"""Removing stored files once the rows that named them are gone.

Deleting a study, patient or project deletes its instance rows in the
request's transaction and returns their storage keys; the files go only
after that commit (a rolled-back delete must not lose a file). A file is
content-addressed, so the same key may be named again by an instance stored
meanwhile: each key is removed inside a short transaction that holds the
key's lock (`lock_storage_key`, also taken by ingest before it moves a file
into the store) and only when no instance row names it any more.

A crash between the commit and the removal leaves unreferenced files behind:
space, never a row without its file.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipacs.db.engine import Database
from ipacs.dicom.storage import Storage
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


def remove_unreferenced(database: Database, storage: Storage, files: Iterable[StoredFile]) -> int:
    """Delete each file no instance row names any more; returns how many were removed."""
    pending = sorted(set(files))
    removed = 0
    for start in range(0, len(pending), BATCH):
        batch = pending[start : start + BATCH]
        with database.session(write=True) as session, session.begin():
            for file in batch:  # in key order, so two removers never deadlock
                lock_storage_key(session, file.storage_key)
            rows = session.execute(
                select(Instance.sha256, Instance.storage_key).where(
                    Instance.sha256.in_([f.sha256 for f in batch])
                )
            )
            named = {(sha256, key) for sha256, key in rows}
            for file in batch:
                if (file.sha256, file.storage_key) not in named:
                    storage.delete(file.storage_key)
                    removed += 1
    if removed:
        log.info("removed %d stored files after a deletion", removed)
    return removed
