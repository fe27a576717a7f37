"""A study as a zip, streamed while it is built (never whole in memory or on disk)."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from ipacs.dicom.storage import FileStore


@dataclass(frozen=True)
class ArchiveEntry:
    name: str
    storage_key: str
    # The member's time in the zip (when the instance was stored); zip's own
    # minimum, 1980-01-01, when unknown.
    stored_at: datetime | None = None


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


def _member(entry: ArchiveEntry) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(entry.name)
    if entry.stored_at is not None:
        # Zip times have no zone; UTC, like every time iPACS shows.
        info.date_time = entry.stored_at.astimezone(UTC).timetuple()[:6]
    info.compress_type = zipfile.ZIP_STORED
    return info


def stream_zip(storage: FileStore, entries: list[ArchiveEntry]) -> Iterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[call-overload]
        for entry in entries:
            with zf.open(_member(entry), "w", force_zip64=True) as member:
                for chunk in storage.read_chunks(entry.storage_key):
                    member.write(chunk)
                    yield sink.drain()
            yield sink.drain()
    yield sink.drain()
