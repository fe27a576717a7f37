"""DICOM: the file store, the one ingest path, the C-STORE receiver, uploads and DICOMweb."""
