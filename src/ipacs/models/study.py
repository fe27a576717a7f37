"""Imaging studies: one patient, one project (the patient's or one of its subprojects)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ipacs.db.base import Base
from ipacs.models.mixins import EntityMixin


class Study(EntityMixin, Base):
    __tablename__ = "studies"
    __table_args__ = (
        Index("ix_studies_patient", "patient_id"),
        Index("ix_studies_project_date", "project_id", "study_date"),
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
