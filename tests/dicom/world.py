"""The world the DICOM tests share, and HTTP shortcuts.

    Trial   AE TRIAL   manager: manager   user: member   viewer: viewer
      Site             manager: site_manager (no role on Trial)
    Other   AE OTHER   user: outsider (a sibling top-level project)

`admin` is a system administrator.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response
from pydicom.dataset import Dataset
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.db.engine import Database
from ipacs.models import Instance, Series, Study
from tests.dicom_factory import to_bytes
from tests.factories import basic, grant, make_project, make_user

API = "/api/v1.0"
# Small limits, so the 413 tests need only small bodies.
MAX_INSTANCE_BYTES = 64 * 1024
MAX_UPLOAD_BYTES = 512 * 1024


@dataclass(frozen=True)
class World:
    trial: int
    site: int
    other: int


def make_world(db: Session, settings: Settings) -> World:
    admin = make_user(db, settings, "admin", is_admin=True)
    users = {
        name: make_user(db, settings, name)
        for name in ("manager", "member", "viewer", "site_manager", "outsider")
    }
    trial = make_project(db, admin, "Trial", dicom_ae_title="TRIAL")
    site = make_project(db, admin, "Site", parent=trial)
    other = make_project(db, admin, "Other", dicom_ae_title="OTHER")
    grant(db, trial, users["manager"], "manager")
    grant(db, trial, users["member"], "user")
    grant(db, trial, users["viewer"], "viewer")
    grant(db, site, users["site_manager"], "manager")
    grant(db, other, users["outsider"], "user")
    db.commit()
    return World(trial=trial.id, site=site.id, other=other.id)


def call(client: TestClient, method: str, path: str, who: str | None, **kwargs: Any) -> Response:
    """One request as `who` (None: anonymous), with a fresh cookie jar."""
    client.cookies.clear()
    headers = {**(basic(who) if who else {}), **kwargs.pop("headers", {})}
    return client.request(method, API + path, headers=headers, **kwargs)


def ok(response: Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert (body["success"], body["error"]) == (False, code)
    return body


def zip_of(files: Iterable[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, data in files:
            zf.writestr(name, data)
    return buffer.getvalue()


def zip_of_datasets(datasets: Iterable[Dataset]) -> bytes:
    return zip_of((f"{ds.SOPInstanceUID}.dcm", to_bytes(ds)) for ds in datasets)


def upload(
    client: TestClient, project_id: int, body: bytes, content_type: str, who: str | None = "member"
) -> Response:
    return call(
        client,
        "POST",
        f"/projects/{project_id}/dicom",
        who,
        content=body,
        headers={"Content-Type": content_type},
    )


def upload_study(client: TestClient, project_id: int, datasets: list[Dataset], who: str = "member") -> Any:
    """Upload datasets as a zip; assert every one was stored; return the summary."""
    summary = ok(upload(client, project_id, zip_of_datasets(datasets), "application/zip", who))
    assert summary["failed"] == [] and summary["stored"] == len(datasets), summary
    return summary


def study_route(db: Session, study_instance_uid: str) -> tuple[int, int, int]:
    """(project_id, patient_pk, study_pk) of a stored study."""
    db.expire_all()
    study = db.scalars(select(Study).where(Study.study_instance_uid == study_instance_uid)).one()
    db.commit()  # end the transaction: an open one would hold SQLite's write lock
    return study.project_id, study.patient_id, study.id


def count_rows(database: Database, model: type[Study] | type[Series] | type[Instance]) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def object_files(data_dir: Path) -> set[str]:
    """Storage keys of every file in the store."""
    objects = data_dir / "store" / "objects"
    return {p.relative_to(objects).as_posix() for p in objects.rglob("*") if p.is_file()}


def dataset_part(data: bytes) -> bytes:
    """A Part 10 file without its preamble and file meta group, whose group length says where it ends.

    What a DICOM network transfer carries: a receiver writes its own file meta around it.
    """
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00", "no file meta group length"
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]
