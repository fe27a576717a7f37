"""The file store: content-addressed by SHA-256, written durably before it is indexed.

A file is first written to `tmp/`, fsynced, then renamed to
`objects/ab/cd/<sha256>` and the directory fsynced (and, when `ab/` or `cd/`
was created for it, the directory it was created in, so that the new entry
survives a power cut too). Only then does ingest commit its database row, so
a crash leaves either nothing indexed or a complete file behind its row.
Temp files are swept when the server starts; files no row names any more,
by `ipacs store sweep` (removal.py).

`Storage` is the interface ingest uses; a store for S3-compatible object
storage can implement it without touching ingest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StagedFile:
    """Bytes written and fsynced to the store's temp area, not yet in the store."""

    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class StoredObject:
    """A file in the store, as a listing sees it."""

    key: str
    sha256: str
    size: int
    modified: float  # POSIX time of its last change


class Storage(Protocol):
    def stage(self, chunks: Iterable[bytes], limit: int | None = None) -> StagedFile: ...
    def promote(self, staged: StagedFile) -> str: ...
    def discard(self, staged: StagedFile) -> None: ...
    def open(self, key: str) -> BinaryIO: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list_objects(self) -> Iterator[StoredObject]: ...


class TooLarge(Exception):
    """More bytes than the caller allowed."""


SHA256_NAME = re.compile(r"[0-9a-f]{64}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> list[Path]:
    """`mkdir -p`; returns the directories that were missing, deepest first. One made meanwhile
    by another writer counts as missing: this writer's acknowledgement must not depend on
    the other's fsync having happened."""
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
    return missing


def make_dirs_durably(path: Path) -> None:
    """`mkdir -p`, with the parent of each directory it made fsynced (the new entry is on disk)."""
    for directory in _make_dirs(path):
        _fsync_dir(directory.parent)


class StagingWriter:
    """Writes one temp file, hashing and counting; `finish` fsyncs it."""

    def __init__(self, path: Path, limit: int | None) -> None:
        self.path = path
        self.limit = limit
        self.size = 0
        self._digest = hashlib.sha256()
        self._out = path.open("wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            self.abort()
            raise TooLarge(f"more than {self.limit} bytes")
        self._digest.update(chunk)
        self._out.write(chunk)

    def finish(self) -> StagedFile:
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        return StagedFile(path=self.path, sha256=self._digest.hexdigest(), size=self.size)

    def abort(self) -> None:
        self._out.close()
        self.path.unlink(missing_ok=True)


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.objects = root / "objects"
        make_dirs_durably(self.tmp)
        make_dirs_durably(self.objects)

    def temp_path(self, suffix: str = "") -> Path:
        """A new empty file in the temp area (swept at start if left behind)."""
        fd, name = tempfile.mkstemp(dir=self.tmp, suffix=suffix)
        os.close(fd)
        return Path(name)

    def open_staging(self, limit: int | None = None) -> StagingWriter:
        """A temp file to write piece by piece (e.g. from a parser's callbacks)."""
        return StagingWriter(self.temp_path(".part"), limit)

    def stage(self, chunks: Iterable[bytes], limit: int | None = None) -> StagedFile:
        """Write chunks to a temp file, hashing as they pass; fsync before returning."""
        writer = self.open_staging(limit)
        try:
            for chunk in chunks:
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return writer.finish()

    def stage_bytes(self, data: bytes) -> StagedFile:
        return self.stage([data])

    def adopt(self, path: Path) -> StagedFile:
        """Stage a file someone else wrote into the temp area (a C-STORE received to disk):
        hash it, fsync it, and leave it where it is, ready for `promote`'s rename."""
        if path.parent.resolve() != self.tmp.resolve():
            raise ValueError(f"{path} is not in the store's temp area")
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
            os.fsync(f.fileno())
        return StagedFile(path=path, sha256=digest.hexdigest(), size=size)

    def key_for(self, sha256: str) -> str:
        return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def path_of(self, key: str) -> Path:
        return self.objects / key

    def promote(self, staged: StagedFile) -> str:
        """Move a staged file into the store, durably; returns its key."""
        key = self.key_for(staged.sha256)
        target = self.path_of(key)
        created = _make_dirs(target.parent)
        if target.exists():
            # Same content already stored (content addressing): nothing to write.
            staged.path.unlink(missing_ok=True)
            return key
        os.replace(staged.path, target)
        # The rename's directory, then the entry of each directory made for it, upwards; all
        # before the caller commits. Leaf first: on ext4 here the two parents' syncs then took
        # 6 ms instead of 12 (the leaf's journal commit carries the new entries too).
        _fsync_dir(target.parent)
        for directory in created:
            _fsync_dir(directory.parent)
        return key

    def discard(self, staged: StagedFile) -> None:
        staged.path.unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        return self.path_of(key).open("rb")

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def delete(self, key: str) -> None:
        self.path_of(key).unlink(missing_ok=True)

    def list_objects(self) -> Iterator[StoredObject]:
        """Every file in `objects/` named as the store names files (ab/cd/<sha256>), in no order.
        Anything else there is not the store's, and is not listed."""
        for top in _subdirectories(self.objects):
            for sub in _subdirectories(Path(top.path)):
                for entry in _entries(Path(sub.path)):
                    name = entry.name
                    if not (SHA256_NAME.fullmatch(name) and name[:2] == top.name and name[2:4] == sub.name):
                        continue
                    try:
                        if not entry.is_file(follow_symlinks=False):
                            continue
                        stat = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:  # removed meanwhile
                        continue
                    yield StoredObject(self.key_for(name), name, stat.st_size, stat.st_mtime)

    def read_chunks(self, key: str) -> Iterator[bytes]:
        with self.open(key) as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def sweep_temp(self) -> int:
        """Remove temp files left by a crash. Call only when no ingest is running."""
        removed = 0
        for entry in self.tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed += 1
        return removed


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _subdirectories(directory: Path) -> list[os.DirEntry[str]]:
    return [e for e in _entries(directory) if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
