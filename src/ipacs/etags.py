"""ETags: every entity carries a version that grows by one per update."""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from ipacs.errors import PreconditionFailed


class Versioned(Protocol):
    @property
    def uuid(self) -> UUID: ...
    @property
    def version(self) -> int: ...


def etag_of(entity: Versioned) -> str:
    return f'"{entity.uuid.hex[:12]}.{entity.version}"'


def check_if_match(entity: Versioned, if_match: str | None) -> None:
    """412 unless If-Match is absent, `*`, or names the entity's current ETag."""
    if if_match is None:
        return
    tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
    if "*" in tags or etag_of(entity) in tags:
        return
    raise PreconditionFailed()
