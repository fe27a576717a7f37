"""Request headers endpoints read: If-Match."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header

IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", description="the ETag last read; a mismatch answers 412"),
]
