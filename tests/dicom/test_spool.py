"""The files the C-STORE receiver writes datasets to while they arrive (spool.py)."""

from __future__ import annotations

import gc
from pathlib import Path

from ipacs.dicom.spool import SpoolFile, SpoolTarget


def test_writing_stops_past_the_limit_but_counting_goes_on(tmp_path: Path) -> None:
    spool = SpoolFile(SpoolTarget(tmp_path, limit=10), ".dcm")
    for chunk in (b"12345", b"67890", b"abc", b"def"):
        spool.write(chunk)
    spool.file.flush()
    assert (spool.size, spool.too_large) == (16, True)
    assert Path(spool.name).read_bytes() == b"1234567890"
    spool.close()


def test_an_abandoned_file_is_removed_when_it_is_collected(tmp_path: Path) -> None:
    """An association aborted mid-dataset never reaches the handler (which moves or removes the
    file); its partial file must not stay in the temp area until the next start."""
    spool = SpoolFile(SpoolTarget(tmp_path, limit=None), ".dcm")
    spool.write(b"partial dataset")
    path = Path(spool.name)
    assert path.parent == tmp_path and path.exists()
    del spool
    gc.collect()
    assert not path.exists()
