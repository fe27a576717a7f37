"""`ipacs store sweep`: files of the store that no instance names, left by a crash, are removed;
named ones, young ones and one an ingest is committing right now are kept. On both databases."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from ipacs import cli
from ipacs.config import Settings, get_settings
from ipacs.db.engine import Database
from ipacs.dicom.ingest import IngestBatch, Ingestor
from ipacs.dicom.removal import sweep_unreferenced
from ipacs.dicom.storage import FileStore, StagedFile
from ipacs.models import Instance
from tests.dicom.world import World, count_rows, object_files, upload_study
from tests.dicom_factory import SeriesSpec, make_dataset, make_study, to_bytes

HOUR = 3600


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _store(settings: Settings) -> FileStore:
    return FileStore(settings.data_dir / "store")


def _orphan(store: FileStore, content: bytes, age: float) -> str:
    """A file moved into the store whose row never committed (what a crash there leaves)."""
    key = store.promote(store.stage_bytes(content))
    _age(store.path_of(key), age)
    return key


def _named_keys(database: Database) -> set[str]:
    with database.session() as session:
        return set(session.scalars(select(Instance.storage_key)))


def _stored_study(client: TestClient, world: World, database: Database, store: FileStore) -> set[str]:
    upload_study(client, world.trial, make_study("SWEEP", [SeriesSpec("MR", 1, 3)]))
    named = _named_keys(database)
    for key in named:
        _age(store.path_of(key), 2 * HOUR)
    return named


def test_only_old_files_no_instance_names_are_removed(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    store = _store(settings)
    named = _stored_study(client, world, database, store)
    old = _orphan(store, b"left by a crash before the commit", 2 * HOUR)
    young = _orphan(store, b"perhaps an ingest in flight elsewhere", 60)
    stray = store.objects / "zz" / "notes.txt"
    stray.parent.mkdir()
    stray.write_text("not the store's: never listed, never removed")

    report = sweep_unreferenced(database, store, grace_seconds=HOUR)

    assert (report.checked, report.recent, report.unreferenced, report.removed) == (5, 1, 1, 1)
    assert report.removed_bytes == len(b"left by a crash before the commit")
    assert object_files(settings.data_dir) == named | {young, "zz/notes.txt"}
    assert old not in object_files(settings.data_dir)
    assert count_rows(database, Instance) == 3


def test_a_dry_run_counts_and_removes_nothing(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    store = _store(settings)
    named = _stored_study(client, world, database, store)
    old = _orphan(store, b"orphan", 2 * HOUR)
    report = sweep_unreferenced(database, store, grace_seconds=HOUR, dry_run=True)
    assert (report.checked, report.unreferenced, report.removed) == (4, 1, 0)
    assert object_files(settings.data_dir) == named | {old}


class PausingStore(FileStore):
    """Holds an ingest between its file's rename into the store and its commit."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.promoted = threading.Event()
        self.go_on = threading.Event()

    def promote(self, staged: StagedFile) -> str:
        key = super().promote(staged)
        self.promoted.set()
        assert self.go_on.wait(30)
        return key


def test_a_file_an_ingest_is_committing_is_kept(world: World, database: Database, settings: Settings) -> None:
    """The sweep reads the file's rows before the ingest commits, and finds none; it must
    check again under the key's lock, which the ingest holds until its commit."""
    pausing = PausingStore(settings.data_dir / "store")
    staged = pausing.stage_bytes(to_bytes(make_dataset(patient_id="IN-FLIGHT")))
    ingest = threading.Thread(
        target=Ingestor(database, pausing).ingest, args=(world.trial, staged, IngestBatch("test"))
    )
    ingest.start()
    assert pausing.promoted.wait(30)
    key = pausing.key_for(staged.sha256)
    _age(pausing.path_of(key), 2 * HOUR)  # the grace period alone would not protect it
    reports = []
    sweep = threading.Thread(
        target=lambda: reports.append(sweep_unreferenced(database, _store(settings), grace_seconds=0))
    )
    sweep.start()
    time.sleep(1)  # the sweep reaches the key's lock, and waits there
    pausing.go_on.set()
    ingest.join(30)
    sweep.join(30)
    assert (reports[0].unreferenced, reports[0].removed) == (1, 0)
    assert _named_keys(database) == {key}
    assert pausing.exists(key)


def test_the_command_sweeps_with_the_grace_period_given(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    store = _store(settings)
    named = _stored_study(client, world, database, store)
    _orphan(store, b"an hour old", 2 * HOUR)
    young = _orphan(store, b"a minute old", 60)
    env = {"IPACS_DATA_DIR": str(settings.data_dir), "IPACS_DATABASE_URL": settings.effective_database_url}

    def run(*args: str) -> str:
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(cli.app, ["store", "sweep", *args], env=env)
        finally:
            get_settings.cache_clear()
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    assert run("--dry-run") == (
        "5 files in the store, 1 named by no instance (would be removed), 1 younger than 3600 s left alone"
    )
    assert run() == (
        "5 files in the store, 1 named by no instance removed (11 bytes), 1 younger than 3600 s left alone"
    )
    assert object_files(settings.data_dir) == named | {young}
    assert run("--grace", "30").startswith("4 files in the store, 1 named by no instance removed")
    assert object_files(settings.data_dir) == named
