"""WADO-RS responses: content negotiation, multipart/related streams and metadata.

Files are sent exactly as stored (byte-identical, never transcoded), read
from the store chunk by chunk while the response streams, so a study of any
size costs the server a few megabytes of memory.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

import orjson
import pydicom
from python_multipart.multipart import parse_options_header

from ipacs.dicom.dicomweb.json_model import dataset_json, tag_key
from ipacs.dicom.dicomweb.service import StoredFile
from ipacs.dicom.storage import FileStore
from ipacs.errors import NotAcceptable

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
AVAILABLE_TRANSFER_SYNTAX = 0x00083002


@dataclass(frozen=True)
class MediaRange:
    media_type: str
    params: dict[str, str]
    q: float


class Packaging(Enum):
    MULTIPART = "multipart"  # multipart/related; type="application/dicom"
    SINGLE = "single"  # one application/dicom body (one instance only)


def _split_outside_quotes(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_accept(header: str | None) -> list[MediaRange]:
    """The Accept header's media ranges, most preferred first (no header: anything)."""
    if not header or not header.strip():
        return [MediaRange("*/*", {}, 1.0)]
    ranges = []
    for part in _split_outside_quotes(header):
        value, options = parse_options_header(part)
        params = {k.decode().lower(): v.decode() for k, v in options.items()}
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        ranges.append(MediaRange(value.decode().lower(), params, q))
    return sorted((r for r in ranges if r.q > 0), key=lambda r: -r.q)


def _syntax_ok(media: MediaRange, syntaxes: set[str | None]) -> bool:
    wanted = media.params.get("transfer-syntax")
    return wanted in (None, "*") or syntaxes == {wanted}


def choose_packaging(accept: list[MediaRange], files: list[StoredFile], instance_level: bool) -> Packaging:
    """How to send instances; 406 for what iPACS cannot serve (it never transcodes).

    A bare application/dicom body is for an instance resource only: a study or
    series is always multipart, even when it holds a single instance.
    """
    syntaxes = {f.transfer_syntax_uid for f in files}
    for media in accept:
        kind = media.params.get("type", DICOM).lower()
        if media.media_type in ("*/*", "multipart/*", "multipart/related") and kind == DICOM:
            if _syntax_ok(media, syntaxes):
                return Packaging.MULTIPART
        elif media.media_type in (DICOM, "application/*") and instance_level and _syntax_ok(media, syntaxes):
            return Packaging.SINGLE
    stored = ", ".join(sorted(s or "unknown" for s in syntaxes))
    raise NotAcceptable(
        'Retrieve serves multipart/related; type="application/dicom" (or application/dicom for a single '
        f"instance), in the transfer syntax as stored ({stored}); iPACS does not transcode"
    )


def check_wado_uri(content_type: str | None, transfer_syntax: str | None, file: StoredFile) -> None:
    """WADO-URI (PS3.18 9) serves the DICOM file only: no rendered image, no transcoding."""
    if (content_type or "").split(";")[0].strip().lower() != DICOM:
        raise NotAcceptable(
            "WADO-URI serves contentType=application/dicom only (without it, the standard's default "
            "is a rendered image/jpeg, which iPACS does not make)"
        )
    if transfer_syntax not in (None, "", "*", file.transfer_syntax_uid):
        raise NotAcceptable(f"The instance is stored as {file.transfer_syntax_uid}; iPACS does not transcode")


def require_json(accept: list[MediaRange]) -> None:
    """Searches and metadata answer application/dicom+json only (or plain JSON)."""
    acceptable = ("*/*", "application/*", DICOM_JSON, "application/json")
    if not any(media.media_type in acceptable for media in accept):
        raise NotAcceptable(f"This resource is served as {DICOM_JSON} only")


def new_boundary() -> str:
    return f"ipacs-{uuid.uuid4().hex}"


def multipart_content_type(boundary: str) -> str:
    return f'multipart/related; type="{DICOM}"; boundary={boundary}'


def _part_type(file: StoredFile) -> str:
    syntax = f"; transfer-syntax={file.transfer_syntax_uid}" if file.transfer_syntax_uid else ""
    return f"{DICOM}{syntax}"


def multipart_stream(storage: FileStore, files: Iterable[StoredFile], boundary: str) -> Iterator[bytes]:
    """Each file as one part, streamed from the store as it is read."""
    for file in files:
        yield f"--{boundary}\r\nContent-Type: {_part_type(file)}\r\n\r\n".encode()
        yield from storage.read_chunks(file.storage_key)
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def metadata_of(storage: FileStore, file: StoredFile) -> bytes:
    """One instance's header as DICOM JSON (no pixel data, no bulk data)."""
    with storage.open(file.storage_key) as f:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
    attributes = dataset_json(ds)
    syntax = file.transfer_syntax_uid
    if syntax:
        attributes[tag_key(AVAILABLE_TRANSFER_SYNTAX)] = {"vr": "UI", "Value": [syntax]}
    return orjson.dumps(dict(sorted(attributes.items())))


def metadata_stream(storage: FileStore, files: Iterable[StoredFile]) -> Iterator[bytes]:
    """A JSON array of every instance's header, one file read at a time."""
    yield b"["
    for index, file in enumerate(files):
        yield (b"," if index else b"") + metadata_of(storage, file)
    yield b"]"
