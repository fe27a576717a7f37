"""Where pynetdicom writes a C-STORE's dataset while it arrives: a file in the store's temp area.

By default pynetdicom gathers a whole dataset in memory before the C-STORE
handler runs, and the handler then copies it once more: a 256 MiB instance
costs more than 512 MiB of the server's memory. With
`STORE_RECV_CHUNKED_DATASET` it writes each fragment to a temporary file as it
arrives instead, but in the system's temp directory (often a tmpfs, i.e. memory
again) and with no size limit. This module gives it a file of ours:

- in the receiving store's `tmp/`, on the store's file system, so ingest moves
  it into the store by a rename, without a copy, and a crash leaves it where
  the start-up sweep removes it;
- that stops writing past the instance size limit, still counting what
  arrives: the handler refuses the instance with a DIMSE status once the
  transfer ends, and the disk holds at most the limit meanwhile.

pynetdicom decodes every P-DATA of an association in that association's DUL
thread, so the receiver registers its settings per DUL thread when it accepts
an association (`register`).
"""

from __future__ import annotations

import os
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pynetdicom import _config as pynetdicom_config
from pynetdicom import dimse_messages


@dataclass(frozen=True)
class SpoolTarget:
    directory: Path
    limit: int | None


class SpoolFile:
    """The file object pynetdicom writes a dataset to: it calls `write`, `file.flush()`, `close()`
    and reads `name`."""

    def __init__(self, target: SpoolTarget, suffix: str) -> None:
        fd, name = tempfile.mkstemp(dir=target.directory, suffix=suffix)
        self.file = os.fdopen(fd, "wb")
        self.name = name
        self.limit = target.limit
        self.size = 0  # every byte that arrived, written or not
        # pynetdicom closes and unlinks the file after the C-STORE handler; an association
        # aborted mid-dataset never gets there, and its partial file goes when this is collected.
        weakref.finalize(self, _remove, self.file, name)

    @property
    def too_large(self) -> bool:
        return self.limit is not None and self.size > self.limit

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if not self.too_large:
            self.file.write(data)
        return len(data)

    def close(self) -> None:
        self.file.close()


def _remove(file: BinaryIO, name: str) -> None:
    file.close()
    Path(name).unlink(missing_ok=True)


_targets: weakref.WeakKeyDictionary[threading.Thread, SpoolTarget] = weakref.WeakKeyDictionary()
_spooled: weakref.WeakValueDictionary[str, SpoolFile] = weakref.WeakValueDictionary()
_lock = threading.Lock()


def _spool_file(*, delete: bool = False, mode: str = "wb", suffix: str = "", **kwargs: Any) -> Any:
    """Stands in for `NamedTemporaryFile` where pynetdicom creates a received dataset's file."""
    with _lock:
        target = _targets.get(threading.current_thread())
    if target is None:  # not an association of our receiver: pynetdicom's own behaviour
        return tempfile.NamedTemporaryFile(delete=delete, mode=mode, suffix=suffix, **kwargs)
    spool = SpoolFile(target, suffix)
    with _lock:
        _spooled[spool.name] = spool
    return spool


def install() -> None:
    """Make pynetdicom write received datasets to files (ours, where registered). Idempotent."""
    if not hasattr(dimse_messages, "NamedTemporaryFile"):
        # Another pynetdicom than the one this was written for: without our files, datasets
        # would go to the system's temp directory and the size limit would not be enforced.
        raise RuntimeError("pynetdicom no longer creates received datasets' files where spool.py expects")
    pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = _spool_file


def register(dul_thread: threading.Thread, target: SpoolTarget) -> None:
    """Datasets arriving on this association (decoded in its DUL thread) go to `target`."""
    with _lock:
        _targets[dul_thread] = target


def spooled(path: Path) -> SpoolFile | None:
    """The spool file a dataset was received into, while its C-STORE is being handled."""
    with _lock:
        return _spooled.get(str(path))
