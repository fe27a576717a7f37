"""A synthetic DICOM dataset on disk: patients x studies x series x instances, valid unique UIDs.

Every file is a Part 10 MR image (explicit VR little endian, 16-bit pixels) with
its own SOPInstanceUID, so both servers store every file as a new instance.
The pixel data is noise of 12 significant bits, as compressible as a real MR
image roughly is (a zip of a ramp would shrink 99% and flatter a server that
deflates); it is shared between files, which keeps generation fast.
"""

from __future__ import annotations

import json
import random
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

MANIFEST = "manifest.json"
# Bumped when the files change, so an old dataset on disk is not reused.
FORMAT = 2


@dataclass(frozen=True)
class DatasetSpec:
    patients: int = 20
    studies: int = 2  # per patient
    series: int = 2  # per study
    instances: int = 50  # per series
    rows: int = 256
    columns: int = 256

    @property
    def total(self) -> int:
        return self.patients * self.studies * self.series * self.instances

    def scaled(self, factor: int) -> DatasetSpec:
        """The same shape with `factor` times the patients."""
        return DatasetSpec(
            self.patients * factor, self.studies, self.series, self.instances, self.rows, self.columns
        )


@dataclass(frozen=True)
class InstanceFile:
    path: str
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    size: int


@dataclass(frozen=True)
class SyntheticDataset:
    root: Path
    spec: DatasetSpec
    files: list[InstanceFile]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def patient_ids(self) -> list[str]:
        return list(dict.fromkeys(f.patient_id for f in self.files))

    def studies(self) -> list[tuple[str, str]]:
        """(PatientID, StudyInstanceUID) of every study, in file order."""
        return list(dict.fromkeys((f.patient_id, f.study_uid) for f in self.files))

    def slices(self, count: int) -> list[list[InstanceFile]]:
        """The files in `count` parts of whole patients, as even as the patient count allows."""
        patients = self.patient_ids()
        groups = [set(patients[i::count]) for i in range(count)]
        return [[f for f in self.files if f.patient_id in group] for group in groups]


def chunks(files: list[InstanceFile], count: int) -> list[list[InstanceFile]]:
    """`count` contiguous runs of files (so concurrent senders mostly send different studies)."""
    size, extra = divmod(len(files), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        out.append(files[start:end])
        start = end
    return [c for c in out if c]


def _template(spec: DatasetSpec) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.PatientBirthDate = "19700101"
    ds.StudyTime = "093000"
    ds.Modality = "MR"
    ds.BodyPartExamined = "BRAIN"
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    noise = random.Random(20240101)
    pixels = [noise.getrandbits(12) for _ in range(spec.rows * spec.columns)]
    ds.PixelData = struct.pack(f"<{len(pixels)}H", *pixels)
    return ds


def generate(root: Path, spec: DatasetSpec, label: str = "BENCH") -> SyntheticDataset:
    """Write the dataset under `root` (reused when a manifest of the same spec is there)."""
    manifest = root / MANIFEST
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        if saved.get("format") == FORMAT and saved["spec"] == asdict(spec):
            return SyntheticDataset(root, spec, [InstanceFile(**f) for f in saved["files"]])
    root.mkdir(parents=True, exist_ok=True)
    ds = _template(spec)
    files: list[InstanceFile] = []
    for p in range(spec.patients):
        ds.PatientID = f"{label}-{p + 1:05d}"
        ds.PatientName = f"Bench^Patient{p + 1}"
        ds.PatientSex = "MF"[p % 2]
        for s in range(spec.studies):
            ds.StudyInstanceUID = generate_uid()
            ds.StudyDate = f"2023{(s % 12) + 1:02d}{(p % 28) + 1:02d}"
            ds.AccessionNumber = f"A{p + 1:05d}{s + 1:02d}"
            ds.StudyDescription = f"Bench study {s + 1}"
            for r in range(spec.series):
                ds.SeriesInstanceUID = generate_uid()
                ds.SeriesNumber = r + 1
                ds.SeriesDescription = f"Series {r + 1}"
                folder = root / f"p{p:05d}" / f"s{s:02d}" / f"r{r:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(spec.instances):
                    ds.SOPInstanceUID = generate_uid()
                    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                    ds.InstanceNumber = i + 1
                    path = folder / f"{i:05d}.dcm"
                    pydicom.dcmwrite(path, ds, enforce_file_format=True)
                    files.append(
                        InstanceFile(
                            str(path),
                            ds.PatientID,
                            ds.StudyInstanceUID,
                            ds.SeriesInstanceUID,
                            ds.SOPInstanceUID,
                            path.stat().st_size,
                        )
                    )
    manifest.write_text(
        json.dumps({"format": FORMAT, "spec": asdict(spec), "files": [asdict(f) for f in files]})
    )
    return SyntheticDataset(root, spec, files)
