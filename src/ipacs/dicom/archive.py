"""A study as a zip, streamed while it is built (never whole in memory or on disk)."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from ipacs.dicom.storage import FileStore


@dataclass(frozen=True)
class ArchiveEntry:
    name: str
    storage_key: str


class _Sink:
    """A write-only file object whose bytes are drained after every write."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._position = 0

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def safe_name(text: str | None, fallback: str) -> str:
    """A path component without separators or surprises."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", (text or "").strip()).strip("._")
    return cleaned[:64] or fallback


def stream_zip(storage: FileStore, entries: list[ArchiveEntry]) -> Iterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[call-overload]
        for entry in entries:
            with zf.open(entry.name, "w", force_zip64=True) as member:
                for chunk in storage.read_chunks(entry.storage_key):
                    member.write(chunk)
                    yield sink.drain()
            yield sink.drain()
    yield sink.drain()
