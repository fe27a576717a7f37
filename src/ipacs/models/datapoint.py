"""Datapoint definitions, their per-patient values, and every earlier version of a value.

A value is kept three ways: `value` is the JSON the API returns, and exactly
one of `num_value` / `text_value` holds a sortable form the database compares
with an index (numbers and booleans as numbers; strings, choices, dates and
UTC datetimes as text whose order is their natural order).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ipacs import clock
from ipacs.db.base import Base, PortableJSON, UTCDateTime
from ipacs.models.mixins import EntityMixin
from ipacs.models.user import User


class Datapoint(EntityMixin, Base):
    __tablename__ = "datapoints"
    __table_args__ = (Index("ix_datapoints_project", "project_id"),)

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(64))
    # Lower-cased name: unique across a lineage is checked case-insensitively.
    name_key: Mapped[str] = mapped_column(String(64), index=True)
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    type: Mapped[str] = mapped_column(String(16))
    choices: Mapped[list[str] | None] = mapped_column(PortableJSON, nullable=True)
    unit: Mapped[str | None] = mapped_column(String(50), nullable=True)
    minimum: Mapped[Any] = mapped_column(PortableJSON, nullable=True)
    maximum: Mapped[Any] = mapped_column(PortableJSON, nullable=True)
    pattern: Mapped[str | None] = mapped_column(String(500), nullable=True)
    required: Mapped[bool] = mapped_column(Boolean, default=False)


class DatapointValue(EntityMixin, Base):
    __tablename__ = "datapoint_values"
    __table_args__ = (
        UniqueConstraint("patient_id", "datapoint_id"),
        Index("ix_datapoint_values_num", "datapoint_id", "num_value", "patient_id"),
        Index("ix_datapoint_values_text", "datapoint_id", "text_value", "patient_id"),
    )

    datapoint_id: Mapped[int] = mapped_column(ForeignKey("datapoints.id", ondelete="CASCADE"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    value: Mapped[Any] = mapped_column(PortableJSON)
    num_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    text_value: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    updated_by: Mapped[User | None] = relationship(foreign_keys=[updated_by_id], lazy="raise")
    datapoint: Mapped[Datapoint] = relationship(lazy="raise")


class DatapointValueVersion(Base):
    """An earlier version of a value, written whenever the value changes."""

    __tablename__ = "datapoint_value_versions"
    __table_args__ = (Index("ix_datapoint_value_versions_value", "value_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value_id: Mapped[int] = mapped_column(ForeignKey("datapoint_values.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    value: Mapped[Any] = mapped_column(PortableJSON)
    # Who wrote this version and when (the version's own author).
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    # When it was replaced and by whom.
    replaced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    replaced_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    changed_by: Mapped[User | None] = relationship(foreign_keys=[changed_by_id], lazy="raise")
    replaced_by: Mapped[User | None] = relationship(foreign_keys=[replaced_by_id], lazy="raise")
