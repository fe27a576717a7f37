"""Which files a project already holds, by SHA-256: an interrupted upload resumes from here."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.orm import Session

from ipacs.auth.caller import Caller
from ipacs.authz.access import readable_project_ids, require_role
from ipacs.authz.roles import Role
from ipacs.models import Instance, ProjectClosure, Study
from ipacs.schemas import InputModel, OutputModel

MAX_CHECKSUMS = 10_000
LOOKUP_CHUNK = 500
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$", to_lower=True)]


class ChecksumQuery(InputModel):
    sha256: list[Sha256] = Field(max_length=MAX_CHECKSUMS, description="hex digests of whole files")


class ChecksumsOut(OutputModel):
    known: list[str] = Field(description="the digests stored in the project or its subprojects")


def known_checksums(session: Session, caller: Caller, project_id: int, digests: list[str]) -> list[str]:
    """The digests among `digests` of instances stored in the project subtree (any role)."""
    require_role(session, caller, project_id, Role.VIEWER)
    subtree = select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == project_id)
    wanted = sorted(set(digests))
    known: set[str] = set()
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        stmt = (
            select(Instance.sha256)
            .join(Study, Study.id == Instance.study_id)
            .where(Instance.sha256.in_(wanted[start : start + LOOKUP_CHUNK]), Study.project_id.in_(subtree))
        )
        if not caller.is_admin:
            stmt = stmt.where(Study.project_id.in_(readable_project_ids(caller)))
        known.update(session.scalars(stmt.distinct()))
    return sorted(known)
