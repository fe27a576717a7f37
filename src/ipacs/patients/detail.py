"""The Patients API view: a patient with its studies, datapoints and values, in four queries."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ipacs.datapoints import repository as definitions
from ipacs.datapoints.schemas import DatapointOut
from ipacs.datapoints.value_service import values_table
from ipacs.models import Patient
from ipacs.patients.schemas import PatientDetail, PatientOut
from ipacs.studies import repository as studies
from ipacs.studies.schemas import StudyOut


def describe(session: Session, patient: Patient) -> PatientDetail:
    datapoints = definitions.all_applicable(session, patient.project_id)
    return PatientDetail(
        **PatientOut.model_validate(patient).model_dump(),
        studies=[
            StudyOut.model_validate(s) for s in studies.list_for_patient(session, patient.id, None).items
        ],
        datapoints=[DatapointOut.model_validate(d) for d in datapoints],
        datapoint_values=values_table(session, patient, datapoints),
    )
