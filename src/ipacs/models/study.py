"""Imaging studies, their series and instances (stored DICOM files)."""

from __future__ import annotations

import uuid as uuid_mod
from datetime import date, datetime

from sqlalchemy import BigInteger, Date, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from ipacs import clock
from ipacs.db.base import Base, UTCDateTime
from ipacs.models.mixins import EntityMixin


class Study(EntityMixin, Base):
    __tablename__ = "studies"
    __table_args__ = (
        Index("ix_studies_patient", "patient_id"),
        Index("ix_studies_project_date", "project_id", "study_date"),
        # A search's study conditions ("has a study dated ...", "... at visit ..."), and the
        # patient they lead to, without reading the studies.
        Index("ix_studies_date_patient", "study_date", "patient_id"),
        Index("ix_studies_visit_patient", "visit", "patient_id"),
    )

    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    accession_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    study_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    study_time: Mapped[str | None] = mapped_column(String(16), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    # DICOM ModalitiesInStudy style: "CT\\MR", exposed as a list.
    modalities: Mapped[str] = mapped_column(String(200), default="")
    visit: Mapped[str | None] = mapped_column(String(100), nullable=True)
    status: Mapped[str | None] = mapped_column(String(50), nullable=True)
    series_count: Mapped[int] = mapped_column(Integer, default=0)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class Series(Base):
    """A DICOM series of a study; created by ingest only."""

    __tablename__ = "series"
    __table_args__ = (Index("ix_series_study", "study_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[uuid_mod.UUID] = mapped_column(Uuid, unique=True, default=uuid_mod.uuid4)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str | None] = mapped_column(String(200), nullable=True)
    body_part_examined: Mapped[str | None] = mapped_column(String(64), nullable=True)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class Instance(Base):
    """One stored DICOM file. `storage_key` names the file in the store (content-addressed)."""

    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_series", "series_id", "instance_number"),
        Index("ix_instances_study", "study_id"),
        Index("ix_instances_sha256", "sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[uuid_mod.UUID] = mapped_column(Uuid, unique=True, default=uuid_mod.uuid4)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transfer_syntax_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
