"""The small world the search tests share, made through the HTTP API.

    Trial      datapoints: age, weight, responder, arm, note, enrolled, seen_at
               member (user), viewer (viewer)
      Site A   datapoint site_code; site_viewer (viewer, no role on Trial)
      Site B
    Other      datapoint secret; outsider (user): a sibling top-level project

Patients (by DICOM PatientID) and their values:

    T1  Trial   F 1980-05-01  age 40, weight 70.5, responder true, arm A,
                              note "it's 50% done", enrolled 2024-01-15,
                              seen_at 2024-01-15T08:30:00Z; studies CT\\MR 2024-02-01 Baseline,
                              MR 2024-08-01 Week 24
    T2  Trial   M             age 17, weight 80 (written as an integer), responder false, arm B,
                              note "x' OR 1=1 --"
    T3  Trial                 no values
    A1  Site A                age 65, arm placebo, site_code S001; study MR 2024-03-01 Week 12
    A2  Site A                age 30, arm A, responder true, note 'said "hi", left'
    B1  Site B                age 50, arm A, weight 99.25; study CT 2024-04-01 Baseline
    x' OR 1=1 --  Site B      age 22 (an injection-shaped PatientID)
    T1  Other                 secret "top"; study CT 2024-02-01 Baseline (same PatientID as Trial's T1)
    O2  Other                 secret "x"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session

from ipacs.config import Settings
from tests.factories import grant, make_project, make_user
from tests.patients.world import call, define, new_patient, new_study, ok

INJECTION_ID = "x' OR 1=1 --"

TRIAL_DATAPOINTS: dict[str, dict[str, Any]] = {
    "age": {"type": "integer"},
    "weight": {"type": "decimal"},
    "responder": {"type": "boolean"},
    "arm": {"type": "choice", "choices": ["A", "B", "placebo"]},
    "note": {"type": "string"},
    "enrolled": {"type": "date"},
    "seen_at": {"type": "datetime"},
}

# (project key, PatientID, patient fields, values)
PATIENTS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "trial",
        "T1",
        {"patient_name": "Lovelace^Ada", "sex": "F", "birth_date": "1980-05-01"},
        {
            "age": 40,
            "weight": 70.5,
            "responder": True,
            "arm": "A",
            "note": "it's 50% done",
            "enrolled": "2024-01-15",
            "seen_at": "2024-01-15T10:30:00+02:00",
        },
    ),
    (
        "trial",
        "T2",
        {"sex": "M"},
        {"age": 17, "weight": 80, "responder": False, "arm": "B", "note": INJECTION_ID},
    ),
    ("trial", "T3", {}, {}),
    ("site_a", "A1", {}, {"age": 65, "arm": "placebo", "site_code": "S001"}),
    ("site_a", "A2", {}, {"age": 30, "arm": "A", "responder": True, "note": 'said "hi", left'}),
    ("site_b", "B1", {}, {"age": 50, "arm": "A", "weight": 99.25}),
    ("site_b", INJECTION_ID, {}, {"age": 22}),
    ("other", "T1", {}, {"secret": "top"}),
    ("other", "O2", {}, {"secret": "x"}),
]

# (label, project key of the patient, PatientID, study fields)
STUDIES: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "T1 baseline",
        "trial",
        "T1",
        {"modalities": ["CT", "MR"], "study_date": "2024-02-01", "visit": "Baseline", "status": "done"},
    ),
    ("T1 week 24", "trial", "T1", {"modalities": ["MR"], "study_date": "2024-08-01", "visit": "Week 24"}),
    ("A1 week 12", "site_a", "A1", {"modalities": ["MR"], "study_date": "2024-03-01", "visit": "Week 12"}),
    ("B1 baseline", "site_b", "B1", {"modalities": ["CT"], "study_date": "2024-04-01", "visit": "Baseline"}),
    ("O1 baseline", "other", "T1", {"modalities": ["CT"], "study_date": "2024-02-01", "visit": "Baseline"}),
]


@dataclass
class SearchWorld:
    projects: dict[str, int]
    datapoints: dict[str, int] = field(default_factory=dict)
    # (project key, PatientID) -> the Patient as the API returned it
    patients: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    studies: dict[str, int] = field(default_factory=dict)

    @property
    def trial(self) -> int:
        return self.projects["trial"]

    def pk(self, project: str, patient_id: str) -> int:
        found: int = self.patients[(project, patient_id)]["id"]
        return found

    def pks(self, *keys: str) -> list[int]:
        """Patient ids in id order for keys like "trial/T1"."""
        return sorted(self.pk(*key.split("/", 1)) for key in keys)


def make_search_world(client: TestClient, db: Session, settings: Settings) -> SearchWorld:
    admin = make_user(db, settings, "admin", is_admin=True, full_name="Ada Admin")
    users = {name: make_user(db, settings, name) for name in ("member", "viewer", "site_viewer", "outsider")}
    trial = make_project(db, admin, "Trial")
    site_a = make_project(db, admin, "Site A", parent=trial)
    site_b = make_project(db, admin, "Site B", parent=trial)
    other = make_project(db, admin, "Other")
    grant(db, trial, users["member"], "user")
    grant(db, trial, users["viewer"], "viewer")
    grant(db, site_a, users["site_viewer"], "viewer")
    grant(db, other, users["outsider"], "user")
    db.commit()
    world = SearchWorld({"trial": trial.id, "site_a": site_a.id, "site_b": site_b.id, "other": other.id})
    for name, spec in TRIAL_DATAPOINTS.items():
        extra = {k: v for k, v in spec.items() if k != "type"}
        world.datapoints[name] = define(client, trial.id, name, spec["type"], **extra)
    world.datapoints["site_code"] = define(client, site_a.id, "site_code", "string")
    world.datapoints["secret"] = define(client, other.id, "secret", "string")
    for project, patient_id, fields, values in PATIENTS:
        who = "outsider" if project == "other" else "member"
        patient = new_patient(client, world.projects[project], patient_id, who, **fields)
        world.patients[(project, patient_id)] = patient
        for name, value in values.items():
            path = f"/projects/{world.projects[project]}/patients/{patient['id']}/datapoints"
            ok(call(client, "POST", path, who, json={"datapoint_name": name, "value": value}), 201)
    for label, project, patient_id, fields in STUDIES:
        who = "outsider" if project == "other" else "member"
        created = new_study(client, world.projects[project], world.pk(project, patient_id), who, **fields)
        world.studies[label] = created["id"]
    return world


def search(
    client: TestClient,
    project_id: int,
    who: str = "viewer",
    query: str = "",
    headers: dict[str, str] | None = None,
    **body: Any,
) -> Response:
    path = f"/projects/{project_id}/search"
    return call(client, "POST", path, who, json={"query": query, **body}, headers=headers or {})


def found_ids(response: Response) -> list[int]:
    """The ids of one page of results, in the order given."""
    return [r["id"] for r in ok(response)["results"]]
