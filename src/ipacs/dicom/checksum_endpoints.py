"""POST /projects/{id}/dicom/checksums: which files are already stored (resumable uploads)."""

from __future__ import annotations

from fastapi import APIRouter

from ipacs.api.deps import CurrentUser, SessionDep
from ipacs.dicom.checksums import ChecksumQuery, ChecksumsOut, known_checksums
from ipacs.schemas import error_responses

router = APIRouter(
    prefix="/projects/{project_id}/dicom", tags=["dicom"], responses=error_responses(400, 401, 403, 404)
)


@router.post("/checksums", response_model=ChecksumsOut)
def stored_checksums(
    project_id: int, body: ChecksumQuery, caller: CurrentUser, db: SessionDep
) -> ChecksumsOut:
    """Of these SHA-256 digests, those of files stored in the project or its subprojects."""
    return ChecksumsOut(known=known_checksums(db, caller, project_id, body.sha256))
