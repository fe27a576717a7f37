"""Reading what ingest needs from a DICOM file's header (never its pixel data)."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from ipacs import clock
from ipacs.errors import InvalidRequest
from ipacs.patients.schemas import PATIENT_ID_PATTERN
from ipacs.studies.schemas import UID_PATTERN

REQUIRED_TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
MAX_UID_LENGTH = 64


class InvalidDicom(InvalidRequest):
    """A file ingest cannot use: not DICOM, or missing what identifies it."""


@dataclass(frozen=True)
class DicomHeader:
    patient_id: str
    patient_name: str | None
    birth_date: date | None
    sex: str | None
    study_instance_uid: str
    study_date: date | None
    study_time: str | None
    accession_number: str | None
    study_description: str | None
    series_instance_uid: str
    modality: str | None
    series_number: int | None
    series_description: str | None
    body_part_examined: str | None
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax_uid: str | None


def _text(ds: Any, keyword: str, limit: int = 200) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    if isinstance(value, MultiValue):
        # Several values: DICOM's own form ("A\\B"), never Python's list repr.
        value = "\\".join(str(v) for v in value)
    text = str(value).strip().replace("\x00", "")
    return text[:limit] or None


def _int(ds: Any, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _date(ds: Any, keyword: str) -> date | None:
    text = _text(ds, keyword)
    if not text or len(text) != 8 or not text.isdigit():
        return None
    try:
        parsed = date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
    return parsed


def read_header(source: Path | bytes) -> DicomHeader:
    """Parse a Part 10 file's header (a path, or the file's bytes); InvalidDicom names what is wrong."""
    try:
        ds = pydicom.dcmread(
            io.BytesIO(source) if isinstance(source, bytes) else source, stop_before_pixels=True
        )
    except InvalidDicomError as exc:
        raise InvalidDicom("not a DICOM Part 10 file (no DICM preamble)") from exc
    except Exception as exc:  # untrusted bytes make pydicom raise anything
        raise InvalidDicom(f"unreadable DICOM: {type(exc).__name__}: {exc}") from exc
    missing = [k for k in REQUIRED_TAGS if not _text(ds, k)]
    if missing:
        raise InvalidDicom(f"missing required DICOM attributes: {', '.join(missing)}")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if len(_text(ds, keyword, 1000) or "") > MAX_UID_LENGTH:
            raise InvalidDicom(f"{keyword} is longer than {MAX_UID_LENGTH} characters")
    patient_id = _text(ds, "PatientID", 1000) or ""
    if not re.fullmatch(PATIENT_ID_PATTERN, patient_id):
        raise InvalidDicom("PatientID is longer than 64 characters or holds a backslash or control character")
    study_uid = _text(ds, "StudyInstanceUID") or ""
    if not re.fullmatch(UID_PATTERN, study_uid):
        raise InvalidDicom(f"StudyInstanceUID {study_uid!r} is not a valid UID (digits and dots)")
    birth = _date(ds, "PatientBirthDate")
    sex = _text(ds, "PatientSex")
    meta = getattr(ds, "file_meta", None)
    return DicomHeader(
        patient_id=patient_id,
        patient_name=_text(ds, "PatientName"),
        birth_date=birth if birth and birth <= clock.now().date() else None,
        sex=sex if sex in ("M", "F", "O") else None,
        study_instance_uid=study_uid,
        study_date=_date(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime", 16),
        accession_number=_text(ds, "AccessionNumber", 64),
        study_description=_text(ds, "StudyDescription", 1000),
        series_instance_uid=_text(ds, "SeriesInstanceUID") or "",
        modality=_text(ds, "Modality", 16),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        body_part_examined=_text(ds, "BodyPartExamined", 64),
        sop_instance_uid=_text(ds, "SOPInstanceUID") or "",
        sop_class_uid=_text(ds, "SOPClassUID") or "",
        instance_number=_int(ds, "InstanceNumber"),
        transfer_syntax_uid=_text(meta, "TransferSyntaxUID", 64) if meta is not None else None,
    )
