"""The file store: durable directories, and what its listing holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipacs.dicom import storage as storage_module
from ipacs.dicom.storage import FileStore


def _fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    synced: list[Path] = []
    fsync_dir = storage_module._fsync_dir

    def record(path: Path) -> None:
        synced.append(path)
        fsync_dir(path)

    monkeypatch.setattr(storage_module, "_fsync_dir", record)
    return synced


def test_a_new_object_directory_is_made_durable_in_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path / "store")
    synced = _fsyncs(monkeypatch)
    key = store.promote(store.stage_bytes(b"first"))
    ab, cd = store.objects / key[:2], store.objects / key[:5]
    # The file renamed into cd/, objects/ab/cd/ created in ab/, objects/ab/ in objects/.
    assert synced == [cd, ab, store.objects]

    synced.clear()
    store.delete(key)
    store.promote(store.stage_bytes(b"first"))
    assert synced == [cd]  # the directories exist: only the rename's own directory


def test_the_store_itself_is_made_durable_when_it_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = _fsyncs(monkeypatch)
    store = FileStore(tmp_path / "data" / "store")
    # For store/tmp/ (made in store/), store/ (in data/), data/ (in tmp_path); then store/objects/.
    assert synced == [store.root, tmp_path / "data", tmp_path, store.root]


def test_the_listing_holds_the_store_files_only(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    key = store.promote(store.stage_bytes(b"content"))
    (store.objects / "zz").mkdir()
    (store.objects / "zz" / "notes.txt").write_text("not the store's")
    (store.objects / key[:5] / ("0" * 64)).write_bytes(b"a sha256 name in the wrong folder")
    (store.objects / key[:5] / "partial.tmp").write_bytes(b"")
    listed = list(store.list_objects())
    assert [(o.key, o.sha256, o.size) for o in listed] == [(key, key[6:], len(b"content"))]
