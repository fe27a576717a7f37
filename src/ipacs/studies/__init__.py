"""Imaging studies of a patient: records created by clients or by DICOM ingest."""
