"""Synthetic DICOM files for tests: valid Part 10, unique UIDs, small pixel data."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


@dataclass
class SeriesSpec:
    modality: str = "MR"
    number: int = 1
    instances: int = 3
    uid: str = field(default_factory=generate_uid)


def make_dataset(
    *,
    patient_id: str = "P001",
    patient_name: str = "Doe^Jane",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    modality: str = "MR",
    series_number: int = 1,
    instance_number: int = 1,
    rows: int = 8,
    columns: int = 8,
    study_date: str = "20240102",
    omit: tuple[str, ...] = (),
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC1"
    ds.StudyDescription = "Brain"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = f"{modality} series {series_number}"
    ds.Modality = modality
    ds.InstanceNumber = instance_number
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes((instance_number + i) % 256 for i in range(rows * columns * 2))
    for keyword in omit:
        delattr(ds, keyword)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def make_study(
    patient_id: str = "P001", series: list[SeriesSpec] | None = None, study_uid: str | None = None
) -> list[Dataset]:
    """A study with the given series (default: two series of three instances)."""
    study_uid = study_uid or generate_uid()
    specs = series or [SeriesSpec("MR", 1), SeriesSpec("CT", 2)]
    return [
        make_dataset(
            patient_id=patient_id,
            study_uid=study_uid,
            series_uid=spec.uid,
            modality=spec.modality,
            series_number=spec.number,
            instance_number=i + 1,
        )
        for spec in specs
        for i in range(spec.instances)
    ]
