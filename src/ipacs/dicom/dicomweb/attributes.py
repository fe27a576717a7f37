"""What a QIDO-RS result holds at each level, built from the index (no file is read).

Each level carries the attributes PS3.18 requires of a result plus what a
viewer shows (descriptions, counts), and a RetrieveURL on the service root the
request came through.
"""

from __future__ import annotations

from ipacs.dicom.dicomweb.json_model import Attributes, dicom_date, dicom_time
from ipacs.models import Instance, Patient, Series, Study

ONLINE = "ONLINE"


def study_url(root: str, study: Study) -> str:
    return f"{root}/studies/{study.study_instance_uid}"


def series_url(root: str, study: Study, series: Series) -> str:
    return f"{study_url(root, study)}/series/{series.series_instance_uid}"


def instance_url(root: str, study: Study, series: Series, instance: Instance) -> str:
    return f"{series_url(root, study, series)}/instances/{instance.sop_instance_uid}"


def add_study(attrs: Attributes, study: Study, patient: Patient) -> Attributes:
    modalities = [m for m in study.modalities.split("\\") if m]
    return (
        attrs.set("StudyInstanceUID", study.study_instance_uid)
        .set("StudyDate", dicom_date(study.study_date))
        .set("StudyTime", dicom_time(study.study_time))
        .set("AccessionNumber", study.accession_number)
        .set("StudyDescription", study.description)
        .set("StudyID")
        .set("ReferringPhysicianName")
        .set("ModalitiesInStudy", *modalities)
        .set("PatientName", patient.patient_name)
        .set("PatientID", patient.patient_id)
        .set("PatientBirthDate", dicom_date(patient.birth_date))
        .set("PatientSex", patient.sex)
        .set("NumberOfStudyRelatedSeries", study.series_count)
        .set("NumberOfStudyRelatedInstances", study.instance_count)
    )


def add_series(attrs: Attributes, series: Series) -> Attributes:
    return (
        attrs.set("SeriesInstanceUID", series.series_instance_uid)
        .set("Modality", series.modality)
        .set("SeriesNumber", series.series_number)
        .set("SeriesDescription", series.series_description)
        .set("BodyPartExamined", series.body_part_examined)
        .set("NumberOfSeriesRelatedInstances", series.instance_count)
    )


def add_instance(attrs: Attributes, instance: Instance) -> Attributes:
    return (
        attrs.set("SOPInstanceUID", instance.sop_instance_uid)
        .set("SOPClassUID", instance.sop_class_uid)
        .set("InstanceNumber", instance.instance_number)
        .set("AvailableTransferSyntaxUID", instance.transfer_syntax_uid)
    )


def study_result(root: str, study: Study, patient: Patient) -> Attributes:
    return (
        add_study(Attributes(), study, patient)
        .set("InstanceAvailability", ONLINE)
        .set("RetrieveURL", study_url(root, study))
    )


def series_result(root: str, series: Series, study: Study, patient: Patient, with_study: bool) -> Attributes:
    """A series result; study attributes too when the study was not in the request path."""
    attrs = add_study(Attributes(), study, patient) if with_study else Attributes()
    return (
        add_series(attrs, series)
        .set("StudyInstanceUID", study.study_instance_uid)
        .set("InstanceAvailability", ONLINE)
        .set("RetrieveURL", series_url(root, study, series))
    )


def instance_result(
    root: str, instance: Instance, series: Series, study: Study, patient: Patient, with_study: bool
) -> Attributes:
    attrs = add_study(Attributes(), study, patient) if with_study else Attributes()
    return (
        add_instance(add_series(attrs, series), instance)
        .set("StudyInstanceUID", study.study_instance_uid)
        .set("InstanceAvailability", ONLINE)
        .set("RetrieveURL", instance_url(root, study, series, instance))
    )
