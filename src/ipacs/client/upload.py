"""Uploading DICOM files, folders and zips: in parallel, resumable, each file on its own.

Every file is hashed first; one checksum query asks the server which of them
the project already holds, and those are skipped, so re-running an upload
that was interrupted sends only what is missing. The rest is sent one file per
request (`application/dicom`) by a few threads; a file the server refuses is
reported with its reason and the others go on.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, Protocol

from ipacs.client.errors import ApiError, ConnectionFailed
from ipacs.client.models import UploadSummaryOut
from ipacs.client.transport import Transport

CHUNK = 1 << 20
CHECKSUM_BATCH = 5000
# Files not worth sending: the media's index and the folder clutter of desktops.
SKIPPED_NAMES = frozenset({"DICOMDIR", ".DS_Store", "Thumbs.db", "desktop.ini"})
UPLOAD_TIMEOUT = 600.0

Outcome = Literal["stored", "duplicate", "skipped", "failed"]


@dataclass(frozen=True)
class UploadItem:
    """One file to send: a file on disk, or a member of a zip (`archive`)."""

    name: str
    path: Path
    size: int
    member: str | None = None

    def open(self) -> IO[bytes]:
        if self.member is None:
            return self.path.open("rb")
        archive = zipfile.ZipFile(self.path)  # one per reader: ZipFile is not thread-safe
        stream = archive.open(self.member)
        stream_close = stream.close

        def close() -> None:
            stream_close()
            archive.close()

        stream.close = close  # type: ignore[method-assign]
        return stream


class UploadProgress(Protocol):
    def hashed(self, item: UploadItem) -> None: ...
    def finished(self, item: UploadItem, outcome: Outcome, reason: str | None) -> None: ...


@dataclass
class UploadReport:
    files: int = 0
    bytes: int = 0
    skipped: int = 0  # already stored before this run: not sent
    stored: int = 0
    duplicates: int = 0  # sent, and the server already had them
    bytes_sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def collect(paths: Iterable[Path]) -> list[UploadItem]:
    """The files to send: files as given, folders walked in name order, zips opened."""
    items: list[UploadItem] = []
    for path in paths:
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                if found.name not in SKIPPED_NAMES and not found.name.startswith("."):
                    items.extend(_items_of(found, str(found)))
        elif path.is_file():
            items.extend(_items_of(path, str(path)))
        else:
            raise FileNotFoundError(f"No such file or folder: {path}")
    return items


def _items_of(path: Path, name: str) -> Iterator[UploadItem]:
    if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                base = member.filename.rsplit("/", 1)[-1]
                if not member.is_dir() and base not in SKIPPED_NAMES and not base.startswith("."):
                    yield UploadItem(f"{name}:{member.filename}", path, member.file_size, member.filename)
        return
    yield UploadItem(name, path, path.stat().st_size)


def sha256_of(item: UploadItem) -> str:
    digest = hashlib.sha256()
    with item.open() as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def known_checksums(transport: Transport, project_id: int, digests: list[str]) -> set[str]:
    known: set[str] = set()
    unique = sorted(set(digests))
    for start in range(0, len(unique), CHECKSUM_BATCH):
        body = {"sha256": unique[start : start + CHECKSUM_BATCH]}
        response = transport.request(
            "POST", f"/projects/{project_id}/dicom/checksums", json=body, idempotent=True
        )
        known.update(response.json()["known"])
    return known


def _send(transport: Transport, project_id: int, item: UploadItem) -> tuple[Outcome, str | None]:
    try:
        response = transport.request(
            "POST",
            f"/projects/{project_id}/dicom",
            body=item.open,
            headers={"Content-Type": "application/dicom"},
            idempotent=True,  # a file sent twice is answered as a duplicate
            timeout=UPLOAD_TIMEOUT,
        )
    except (ApiError, ConnectionFailed) as exc:
        return "failed", str(exc)
    summary = UploadSummaryOut.model_validate(response.json())
    if summary.failed:
        return "failed", "; ".join(f.reason for f in summary.failed)
    return ("stored" if summary.stored else "duplicate"), None


def upload(
    transport: Transport,
    project_id: int,
    items: list[UploadItem],
    *,
    workers: int = 4,
    progress: UploadProgress | None = None,
    hasher: Callable[[UploadItem], str] = sha256_of,
) -> UploadReport:
    """Hash, skip what the project holds, send the rest in parallel; never stops at a bad file."""
    report = UploadReport(files=len(items), bytes=sum(i.size for i in items))
    digests: dict[UploadItem, str] = {}
    for item in items:
        digests[item] = hasher(item)
        if progress is not None:
            progress.hashed(item)
    known = known_checksums(transport, project_id, list(digests.values()))
    todo = []
    for item in items:
        if digests[item] in known:
            report.skipped += 1
            if progress is not None:
                progress.finished(item, "skipped", None)
        else:
            todo.append(item)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(_send, transport, project_id, item): item for item in todo}
        for future in as_completed(futures):
            item = futures[future]
            outcome, reason = future.result()
            if outcome == "failed":
                report.failed.append((item.name, reason or "failed"))
            else:
                report.bytes_sent += item.size
                report.stored += outcome == "stored"
                report.duplicates += outcome == "duplicate"
            if progress is not None:
                progress.finished(item, outcome, reason)
    return report
