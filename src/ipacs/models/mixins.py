"""Columns every entity shares: id, uuid, timestamps, creator and an ETag version."""

from __future__ import annotations

import uuid as uuid_mod
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, Integer, Uuid
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from ipacs import clock
from ipacs.db.base import UTCDateTime

if TYPE_CHECKING:
    from ipacs.models.user import User


class EntityMixin:
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[uuid_mod.UUID] = mapped_column(Uuid, unique=True, default=uuid_mod.uuid4)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now, onupdate=clock.now)
    # Grows by one per update; the ORM adds "WHERE version = :old" to every
    # UPDATE, so two writers holding the same ETag cannot both succeed.
    version: Mapped[int] = mapped_column(Integer, default=1, nullable=False)

    @declared_attr
    def creator_id(cls) -> Mapped[int | None]:
        return mapped_column(ForeignKey("users.id"), nullable=True)

    @declared_attr
    def creator(cls) -> Mapped[User | None]:
        return relationship("User", foreign_keys=lambda: [cls.creator_id], lazy="raise")  # type: ignore[arg-type]

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.version}
