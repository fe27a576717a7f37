"""Bodies of the bulk import of datapoint values."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ipacs.schemas import InputModel, OutputModel

MAX_IMPORT_ROWS = 10_000


class ImportRow(InputModel):
    """One patient's values; `null` leaves a value as it is."""

    # Checked by the service, so that a bad one is reported like any other cell.
    patient_id: str = Field(description="the patient's identifier (DICOM PatientID)")
    values: dict[str, Any] = Field(description="datapoint name -> typed JSON value")


class ImportRequest(InputModel):
    rows: list[ImportRow] = Field(max_length=MAX_IMPORT_ROWS)
    dry_run: bool = Field(False, description="validate and count, write nothing")
    create_patients: bool = Field(False, description="create patients not found, in this project")


class ImportSummaryOut(OutputModel):
    """What an import did (or, with dry_run, would do)."""

    success: bool = True
    dry_run: bool
    rows: int
    patients_created: int
    values_created: int
    values_updated: int
    values_unchanged: int
    cells_empty: int
