"""DICOM test fixtures: small upload limits and the shared world (see world.py)."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from ipacs.config import Settings
from tests.dicom.world import MAX_INSTANCE_BYTES, MAX_UPLOAD_BYTES, World, make_world


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"max_instance_bytes": MAX_INSTANCE_BYTES, "max_upload_bytes": MAX_UPLOAD_BYTES}
    )


@pytest.fixture
def world(db: Session, settings: Settings) -> World:
    return make_world(db, settings)
