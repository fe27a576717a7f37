"""Patients (subjects): one project each, visible in that project and its ancestors."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Date, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ipacs.db.base import Base
from ipacs.models.mixins import EntityMixin


class Patient(EntityMixin, Base):
    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint("project_id", "patient_id"),
        Index("ix_patients_patient_id", "patient_id"),
        Index("ix_patients_project_created", "project_id", "created_at"),
    )

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    # The subject's identifier (DICOM PatientID), unique within the project.
    patient_id: Mapped[str] = mapped_column(String(64))
    patient_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    birth_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    sex: Mapped[str | None] = mapped_column(String(1), nullable=True)
