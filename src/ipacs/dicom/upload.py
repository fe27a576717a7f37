"""HTTP upload of DICOM: one file, a zip, or multipart/related; each file ingested alone.

The request body is streamed to the store's temp area, never held in memory;
a zip is read member by member from disk. A bad file fails alone and is
reported by name; the good ones are stored.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ipacs.auth.caller import Caller
from ipacs.dicom.ingest import IngestBatch, Ingestor
from ipacs.dicom.status import status_for
from ipacs.dicom.storage import CHUNK, FileStore, StagedFile, StagingWriter, TooLarge
from ipacs.errors import InvalidRequest, IpacsError, PayloadTooLarge, UnsupportedMediaType

DICOM = "application/dicom"
ZIP_TYPES = ("application/zip", "application/x-zip-compressed")
MULTIPART = "multipart/related"
MAX_ZIP_MEMBERS = 100_000
# A member that expands more than this is treated as a zip bomb.
MAX_COMPRESSION_RATIO = 200


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int
    max_file_bytes: int


@dataclass
class UploadSummary:
    stored: int = 0
    duplicates: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    studies: dict[int, dict[str, object]] = field(default_factory=dict)


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    if not content_type:
        raise UnsupportedMediaType(
            "Content-Type is required: application/dicom, application/zip or multipart/related"
        )
    value, options = parse_options_header(content_type)
    params = {k.decode().lower(): v.decode() for k, v in options.items()}
    return value.decode().lower(), params


class Upload:
    """One upload request: stages the body, then ingests file after file."""

    def __init__(
        self,
        storage: FileStore,
        ingestor: Ingestor,
        project_id: int,
        limits: UploadLimits,
        actor: Caller | None = None,
    ) -> None:
        self.storage = storage
        self.ingestor = ingestor
        self.project_id = project_id
        self.limits = limits
        self.summary = UploadSummary()
        self.batch = IngestBatch(source="http upload", actor=actor)

    def run(self, content_type: str | None, body: Iterable[bytes]) -> UploadSummary:
        kind, params = media_type(content_type)
        if kind not in (DICOM, MULTIPART, *ZIP_TYPES):
            raise UnsupportedMediaType(f"Unsupported Content-Type {kind!r}")
        if kind == MULTIPART and params.get("type", DICOM).lower() != DICOM:
            raise UnsupportedMediaType('multipart/related needs type="application/dicom"')
        limit = self.limits.max_file_bytes if kind == DICOM else self.limits.max_upload_bytes
        try:
            staged = self.storage.stage(body, limit=limit)
        except TooLarge as exc:
            raise PayloadTooLarge(f"Upload exceeds {limit} bytes") from exc
        if kind == DICOM:
            self._ingest("upload", staged)
        elif kind == MULTIPART:
            self._multipart(staged, params.get("boundary", ""))
        else:
            self._zip(staged)
        return self.summary

    def _ingest(self, name: str, staged: StagedFile) -> None:
        try:
            result = self.ingestor.ingest(self.project_id, staged, self.batch)
        except IpacsError as exc:
            self.summary.failed.append({"name": name, "reason": exc.message})
            return
        except Exception as exc:
            if status_for(exc) is None:
                raise
            self.summary.failed.append({"name": name, "reason": f"could not be stored: {exc}"})
            return
        if result.status == "stored":
            self.summary.stored += 1
        else:
            self.summary.duplicates += 1
        self.summary.studies[result.study_id] = {
            "id": result.study_id,
            "uuid": result.study_uuid,
            "study_instance_uid": result.study_instance_uid,
        }

    def _zip(self, archive: StagedFile) -> None:
        try:
            with zipfile.ZipFile(archive.path) as zf:
                members = [m for m in zf.infolist() if not m.is_dir()]
                if len(members) > MAX_ZIP_MEMBERS:
                    raise PayloadTooLarge(f"A zip may hold at most {MAX_ZIP_MEMBERS} files")
                for member in members:
                    self._zip_member(zf, member)
        except zipfile.BadZipFile:
            self.summary.failed.append({"name": "upload.zip", "reason": "not a valid zip archive"})
        finally:
            self.storage.discard(archive)

    def _zip_member(self, zf: zipfile.ZipFile, member: zipfile.ZipInfo) -> None:
        name = member.filename
        reason = _unsafe_member(member, self.limits.max_file_bytes)
        if reason:
            self.summary.failed.append({"name": name, "reason": reason})
            return
        try:
            with zf.open(member) as stream:
                # The header's sizes can lie: the limit is enforced on what is read.
                staged = self.storage.stage(_chunks(stream.read), limit=member.file_size)
        except (TooLarge, zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
            self.summary.failed.append({"name": name, "reason": f"unreadable zip member: {exc}"})
            return
        self._ingest(name, staged)

    def _multipart(self, body: StagedFile, boundary: str) -> None:
        try:
            parts = _split_multipart(self.storage, body.path, boundary, self.limits.max_file_bytes)
        finally:
            self.storage.discard(body)
        for index, part in enumerate(parts, start=1):
            self._ingest(f"part {index}", part)


def _chunks(read: Callable[[int], bytes]) -> Iterator[bytes]:
    while chunk := read(CHUNK):
        yield chunk


def _unsafe_member(member: zipfile.ZipInfo, max_file_bytes: int) -> str | None:
    """Why a zip member is refused: a path trick or a bomb."""
    path = PurePosixPath(member.filename.replace("\\", "/"))
    if (
        path.is_absolute()
        or ".." in path.parts
        or member.filename.startswith(("/", "\\"))
        or ":" in path.parts[0]
    ):
        return "unsafe path in zip (absolute or containing '..')"
    if member.file_size > max_file_bytes:
        return f"file larger than {max_file_bytes} bytes"
    if member.compress_size and member.file_size / member.compress_size > MAX_COMPRESSION_RATIO:
        return f"compression ratio above {MAX_COMPRESSION_RATIO}:1 (zip bomb?)"
    return None


def _split_multipart(storage: FileStore, path: Path, boundary: str, max_part: int) -> list[StagedFile]:
    """Stage each part of a multipart body (read from disk) as its own file."""
    if not boundary:
        raise UnsupportedMediaType("multipart/related needs a boundary parameter")
    staged: list[StagedFile] = []
    writer: StagingWriter | None = None

    def on_part_begin() -> None:
        nonlocal writer
        writer = storage.open_staging(max_part)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        assert writer is not None
        writer.write(data[start:end])

    def on_part_end() -> None:
        nonlocal writer
        assert writer is not None
        staged.append(writer.finish())
        writer = None

    parser = MultipartParser(
        boundary,
        callbacks={"on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end},
    )
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        for part in staged:
            storage.discard(part)
        if isinstance(exc, TooLarge):
            raise PayloadTooLarge(f"a part is larger than {max_part} bytes") from exc
        if isinstance(exc, MultipartParseError):
            raise InvalidRequest(f"malformed multipart/related body: {exc}") from exc
        raise
    finally:
        if writer is not None:
            writer.abort()
    return staged
