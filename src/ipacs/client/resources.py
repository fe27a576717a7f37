"""Resource helpers: projects, patients, datapoints and their values, studies.

A project is named by id, by path ("Trial A/Site 1") or by a Project read
before; a patient by its patient_id (the DICOM PatientID, a str), by its id
(an int) or by a Patient read before.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import IO, Any

from ipacs.client.errors import AmbiguousMatch, Conflict, NotFound
from ipacs.client.models import (
    Datapoint,
    DatapointValue,
    ImportSummaryOut,
    Patient,
    Project,
    SeriesOut,
    Study,
    ValueVersionOut,
)
from ipacs.client.transport import Transport, with_etag

ProjectRef = int | str | Project
PatientRef = int | str | Patient
DatapointRef = int | str | Datapoint
StudyRef = int | Study


def _not_found(message: str) -> NotFound:
    return NotFound(message, status=404, error="not_found")


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


class Projects:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def iter(self, *, search: str | None = None, parent: ProjectRef | None = None) -> Iterator[Project]:
        """Every project the caller can see (one request per 1000)."""
        params: dict[str, Any] = {}
        if search:
            params["search"] = search
        if parent is not None:
            params["parent_id"] = self.id_of(parent)
        return self._t.iter_list(Project, "/projects", params)

    def list(self, *, search: str | None = None, parent: ProjectRef | None = None) -> builtins.list[Project]:
        return [*self.iter(search=search, parent=parent)]

    def get(self, project: ProjectRef) -> Project:
        """A project by id, by path ("Trial A/Site 1") or by a digit-only name's id."""
        if isinstance(project, Project):
            project = project.id
        if isinstance(project, int) or project.strip().isdigit():
            return self._t.get_model(Project, f"/projects/{int(project)}")
        return self.get(self._by_path(project).id)

    def _by_path(self, path: str) -> Project:
        parts = [p.strip() for p in path.strip().strip("/").split("/") if p.strip()]
        if not parts:
            raise _not_found(f"No project {path!r}")
        matches = [p for p in self.iter(search=parts[-1]) if [*(a.name for a in p.path), p.name] == parts]
        if not matches:
            raise _not_found(f"No project {path!r} that you can see")
        if len(matches) > 1:
            raise AmbiguousMatch(f"{len(matches)} projects are named {path!r}; use the id")
        return matches[0]

    def id_of(self, project: ProjectRef) -> int:
        """The id, with no request when given an id or a Project."""
        if isinstance(project, Project):
            return project.id
        if isinstance(project, int) or project.strip().isdigit():
            return int(project)
        return self._by_path(project).id

    def create(
        self,
        name: str,
        *,
        parent: ProjectRef | None = None,
        description: str = "",
        dicom_ae_title: str | None = None,
    ) -> Project:
        body = {
            "name": name,
            "description": description,
            "parent_id": self.id_of(parent) if parent is not None else None,
            "dicom_ae_title": dicom_ae_title,
        }
        response = self._t.request("POST", "/projects", json=body)
        return with_etag(Project.model_validate(response.json()), response)


class Patients:
    def __init__(self, transport: Transport, projects: Projects) -> None:
        self._t = transport
        self._projects = projects

    def iter(
        self,
        project: ProjectRef,
        *,
        recursive: bool = False,
        search: str | None = None,
        page_size: int = 1000,
    ) -> Iterator[Patient]:
        """Every patient of the project (and its subprojects with recursive=True), paged by keyset."""
        pid = self._projects.id_of(project)
        params: dict[str, Any] = {"recursive": str(recursive).lower()}
        if search:
            params["search"] = search
        return self._t.iter_list(Patient, f"/projects/{pid}/patients", params, page_size=page_size)

    def list(
        self, project: ProjectRef, *, recursive: bool = False, search: str | None = None
    ) -> builtins.list[Patient]:
        return [*self.iter(project, recursive=recursive, search=search)]

    def get(self, project: ProjectRef, patient: PatientRef) -> Patient:
        """A patient by patient_id (str, searched in the project subtree) or by id (int), with its ETag."""
        pid = self._projects.id_of(project)
        if isinstance(patient, Patient):
            patient = patient.id
        if isinstance(patient, str):
            patient = self._by_patient_id(pid, patient).id
        return self._t.get_model(Patient, f"/projects/{pid}/patients/{patient}")

    def _by_patient_id(self, project_id: int, patient_id: str) -> Patient:
        params = {"patient_id": patient_id, "recursive": "true", "limit": 2}
        found = [
            Patient.model_validate(p) for p in self._t.get_json(f"/projects/{project_id}/patients", params)
        ]
        if not found:
            raise _not_found(f"No patient {patient_id!r} in project {project_id} or its subprojects")
        if len(found) > 1:
            raise AmbiguousMatch(
                f"Patient {patient_id!r} exists in several subprojects; name the subproject instead"
            )
        return found[0]

    def id_of(self, project: ProjectRef, patient: PatientRef) -> int:
        if isinstance(patient, Patient):
            return patient.id
        if isinstance(patient, int):
            return patient
        return self._by_patient_id(self._projects.id_of(project), patient).id

    def create(
        self,
        project: ProjectRef,
        patient_id: str,
        *,
        patient_name: str | None = None,
        birth_date: date | str | None = None,
        sex: str | None = None,
    ) -> Patient:
        pid = self._projects.id_of(project)
        body = {
            "patient_id": patient_id,
            "patient_name": patient_name,
            "birth_date": _plain(birth_date),
            "sex": sex,
        }
        response = self._t.request("POST", f"/projects/{pid}/patients", json=body)
        return with_etag(Patient.model_validate(response.json()), response)

    def update(
        self, project: ProjectRef, patient: PatientRef, *, if_match: str | None = None, **changes: Any
    ) -> Patient:
        """Change the given fields; a Patient read before sends its ETag, so a concurrent change raises."""
        pid = self._projects.id_of(project)
        if if_match is None and isinstance(patient, Patient):
            if_match = patient.etag
        pk = self.id_of(pid, patient)
        headers = {"If-Match": if_match} if if_match else {}
        body = {k: _plain(v) for k, v in changes.items()}
        response = self._t.request("PUT", f"/projects/{pid}/patients/{pk}", json=body, headers=headers)
        return with_etag(Patient.model_validate(response.json()), response)


class Datapoints:
    def __init__(self, transport: Transport, projects: Projects, patients: Patients) -> None:
        self._t = transport
        self._projects = projects
        self._patients = patients

    def list(self, project: ProjectRef) -> builtins.list[Datapoint]:
        """The definitions that apply in the project (its own and its ancestors')."""
        pid = self._projects.id_of(project)
        return [*self._t.iter_list(Datapoint, f"/projects/{pid}/datapoints")]

    def get(self, project: ProjectRef, datapoint: DatapointRef) -> Datapoint:
        if isinstance(datapoint, Datapoint):
            return datapoint
        for found in self.list(project):
            if found.id == datapoint or (
                isinstance(datapoint, str) and found.name.lower() == datapoint.lower()
            ):
                return found
        raise _not_found(f"No datapoint {datapoint!r} applies in project {project}")

    def create(self, project: ProjectRef, name: str, type: str, **fields: Any) -> Datapoint:  # noqa: A002
        """Define a datapoint (managers); `type`: string integer decimal boolean date datetime choice."""
        pid = self._projects.id_of(project)
        created = self._t.request(
            "POST", f"/projects/{pid}/datapoints", json={"name": name, "type": type, **fields}
        )
        return self._t.get_model(Datapoint, f"/projects/{pid}/datapoints/{created.json()['id']}")

    def values(self, project: ProjectRef, patient: PatientRef) -> builtins.list[DatapointValue]:
        """Every datapoint that applies to the patient, with its value (or None)."""
        pid = self._projects.id_of(project)
        pk = self._patients.id_of(pid, patient)
        return [
            DatapointValue.model_validate(v)
            for v in self._t.get_json(f"/projects/{pid}/patients/{pk}/datapoints")
        ]

    def get_value(self, project: ProjectRef, patient: PatientRef, datapoint: DatapointRef) -> DatapointValue:
        """One value with its ETag (value None when unset)."""
        pid = self._projects.id_of(project)
        pk = self._patients.id_of(pid, patient)
        dp = self.get(pid, datapoint).id if not isinstance(datapoint, int) else datapoint
        return self._t.get_model(DatapointValue, f"/projects/{pid}/patients/{pk}/datapoints/{dp}")

    def set_value(
        self,
        project: ProjectRef,
        patient: PatientRef,
        datapoint: DatapointRef,
        value: Any,
        *,
        if_match: str | DatapointValue | None = None,
        overwrite: bool = False,
    ) -> DatapointValue:
        """Set a value without ever overwriting one silently.

        - `if_match` (a DatapointValue read before, or its ETag): replaces the
          value only if it is still the one read; otherwise raises
          ConcurrentUpdate (a value read as unset must still be unset: Conflict).
        - neither: sets the value only if none is stored (Conflict otherwise).
        - `overwrite=True`: replaces whatever is stored.
        """
        pid = self._projects.id_of(project)
        pk = self._patients.id_of(pid, patient)
        dp = self.get(pid, datapoint).id if not isinstance(datapoint, int) else datapoint
        path = f"/projects/{pid}/patients/{pk}/datapoints"
        etag = if_match.etag if isinstance(if_match, DatapointValue) else if_match
        if etag is not None or overwrite:
            headers = {"If-Match": etag} if etag is not None else {}
            response = self._t.request("PUT", f"{path}/{dp}", json={"value": _plain(value)}, headers=headers)
            return with_etag(DatapointValue.model_validate(response.json()), response)
        try:
            self._t.request("POST", path, json={"datapoint_id": dp, "value": _plain(value)})
        except Conflict as exc:
            exc.message += (
                "; it was not overwritten: read it with get_value() and pass it as if_match, "
                "or use overwrite=True"
            )
            raise
        return self.get_value(pid, pk, dp)

    def history(
        self, project: ProjectRef, patient: PatientRef, datapoint: DatapointRef
    ) -> builtins.list[ValueVersionOut]:
        pid = self._projects.id_of(project)
        pk = self._patients.id_of(pid, patient)
        dp = self.get(pid, datapoint).id if not isinstance(datapoint, int) else datapoint
        versions = self._t.get_json(f"/projects/{pid}/patients/{pk}/datapoints/{dp}/history")
        return [ValueVersionOut.model_validate(v) for v in versions]

    def import_rows(
        self,
        project: ProjectRef,
        rows: builtins.list[dict[str, Any]],
        *,
        dry_run: bool = False,
        create_patients: bool = False,
    ) -> ImportSummaryOut:
        """One bulk request: rows of {patient_id, values: {name: value}}; all or nothing."""
        pid = self._projects.id_of(project)
        body = {"rows": rows, "dry_run": dry_run, "create_patients": create_patients}
        response = self._t.request(
            "POST", f"/projects/{pid}/datapoints/import", json=body, idempotent=dry_run
        )
        return ImportSummaryOut.model_validate(response.json())


class Studies:
    def __init__(self, transport: Transport, projects: Projects, patients: Patients) -> None:
        self._t = transport
        self._projects = projects
        self._patients = patients

    def _path(self, project: ProjectRef, patient: PatientRef) -> str:
        pid = self._projects.id_of(project)
        return f"/projects/{pid}/patients/{self._patients.id_of(pid, patient)}/studies"

    def list(self, project: ProjectRef, patient: PatientRef) -> builtins.list[Study]:
        """The patient's studies in the project and its subprojects."""
        return [*self._t.iter_list(Study, self._path(project, patient))]

    def get(self, project: ProjectRef, patient: PatientRef, study: StudyRef) -> Study:
        sid = study.id if isinstance(study, Study) else study
        return self._t.get_model(Study, f"{self._path(project, patient)}/{sid}")

    def create(self, project: ProjectRef, patient: PatientRef, **fields: Any) -> Study:
        path = self._path(project, patient)
        created = self._t.request("POST", path, json={k: _plain(v) for k, v in fields.items()})
        return self._t.get_model(Study, f"{path}/{created.json()['id']}")

    def update(
        self,
        project: ProjectRef,
        patient: PatientRef,
        study: StudyRef,
        *,
        if_match: str | None = None,
        **changes: Any,
    ) -> Study:
        """Change the given fields; a Study read before sends its ETag, so a concurrent change raises."""
        if if_match is None and isinstance(study, Study):
            if_match = study.etag
        sid = study.id if isinstance(study, Study) else study
        headers = {"If-Match": if_match} if if_match else {}
        body = {k: _plain(v) for k, v in changes.items()}
        response = self._t.request("PUT", f"{self._path(project, patient)}/{sid}", json=body, headers=headers)
        return with_etag(Study.model_validate(response.json()), response)

    def series(self, project: ProjectRef, patient: PatientRef, study: StudyRef) -> builtins.list[SeriesOut]:
        sid = study.id if isinstance(study, Study) else study
        return [*self._t.iter_list(SeriesOut, f"{self._path(project, patient)}/{sid}/series")]

    def download(
        self,
        project: ProjectRef,
        patient: PatientRef,
        study: StudyRef,
        dest: Path | IO[bytes],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream the study's zip to a file; `progress(n)` is called with each chunk's size. Returns bytes."""
        sid = study.id if isinstance(study, Study) else study
        path = f"{self._path(project, patient)}/{sid}/archive"
        written = 0
        with self._t.stream("GET", path, headers={"Accept": "application/zip"}) as response:
            out = dest.open("wb") if isinstance(dest, Path) else dest
            try:
                for chunk in response.iter_bytes(1 << 16):
                    out.write(chunk)
                    written += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
            finally:
                if isinstance(dest, Path):
                    out.close()
        return written
