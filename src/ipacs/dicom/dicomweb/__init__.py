"""DICOMweb under /dicomweb: QIDO-RS search, WADO-RS retrieve, STOW-RS store (PS3.18)."""
