"""The one table from our errors to DIMSE C-STORE status codes (PS3.7 Annex C)."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from ipacs.dicom.header import InvalidDicom
from ipacs.dicom.ingest import ConflictingInstance
from ipacs.errors import Conflict, NotFound, PermissionDenied

SUCCESS = 0x0000
REFUSED_NOT_AUTHORIZED = 0x0124
DUPLICATE_SOP_INSTANCE = 0x0111
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000

# Checked in order: the first class that matches decides.
STATUS_FOR_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (InvalidDicom, CANNOT_UNDERSTAND),
    (ConflictingInstance, DUPLICATE_SOP_INSTANCE),
    (Conflict, PROCESSING_FAILURE),
    (PermissionDenied, REFUSED_NOT_AUTHORIZED),
    (NotFound, REFUSED_NOT_AUTHORIZED),
    (OSError, OUT_OF_RESOURCES),
    (SQLAlchemyError, OUT_OF_RESOURCES),
)


def status_for(exc: BaseException) -> int | None:
    """The DIMSE status for an error, or None if it is not an expected failure."""
    for cls, status in STATUS_FOR_ERROR:
        if isinstance(exc, cls):
            return status
    return None
