"""The project tree through the HTTP API: moving, inheritance, deleting, names, lists, ETags."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.datapoints.schemas import DatapointCreate
from ipacs.datapoints.service import create_definition
from ipacs.datapoints.values import typed_value
from ipacs.db.engine import Database
from ipacs.models import (
    AuditEvent,
    Datapoint,
    DatapointValue,
    Membership,
    Patient,
    Project,
    ProjectClosure,
    Study,
    User,
)
from tests.factories import as_caller, basic, grant, make_project, make_user

PROJECTS = "/api/v1.0/projects"
ADMIN = basic("root")


def _admin(db: Session, settings: Settings) -> User:
    return make_user(db, settings, "root", is_admin=True)


def _chain(db: Session, creator: User, names: list[str], parent: Project | None = None) -> list[Project]:
    """Projects nested one in the next: names[0] at the top (or under `parent`)."""
    chain: list[Project] = []
    for name in names:
        chain.append(make_project(db, creator, name, parent=chain[-1] if chain else parent))
    return chain


def _get(client: TestClient, project: Project | int, who: str = "root") -> Any:
    pid = project if isinstance(project, int) else project.id
    return client.get(f"{PROJECTS}/{pid}", headers=basic(who))


def _path_names(client: TestClient, project: Project, who: str = "root") -> list[str]:
    r = _get(client, project, who)
    assert r.status_code == 200, r.text
    return [p["name"] for p in r.json()["path"]]


def _move(client: TestClient, project: Project, parent: Project | None, who: str = "root") -> Any:
    body = {"parent_id": parent.id if parent else None}
    return client.put(f"{PROJECTS}/{project.id}", json=body, headers=basic(who))


def _add_patient(db: Session, project: Project, patient_id: str = "P-001") -> Patient:
    patient = Patient(project_id=project.id, patient_id=patient_id)
    db.add(patient)
    db.flush()
    return patient


def _add_value(db: Session, patient: Patient, datapoint: Datapoint, raw: Any) -> None:
    typed = typed_value(datapoint.type, raw)
    db.add(
        DatapointValue(
            datapoint_id=datapoint.id,
            patient_id=patient.id,
            value=typed.value,
            num_value=typed.num,
            text_value=typed.text,
        )
    )
    db.flush()


def _add_study(db: Session, patient: Patient, project: Project, uid: str = "1.2.3.4") -> Study:
    """A study kept in `project` (the patient's project or one below it)."""
    study = Study(study_instance_uid=uid, patient_id=patient.id, project_id=project.id)
    db.add(study)
    db.flush()
    return study


def _events(database: Database) -> int:
    # A short read of its own: the arranging session's objects stay loaded, and no
    # transaction is left open to block the app's writes (SQLite has one writer).
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent)) or 0


# --- re-parenting -----------------------------------------------------------------------------


def test_reparent_refuses_cycles(
    client: TestClient, db: Session, settings: Settings, database: Database
) -> None:
    root = _admin(db, settings)
    a, b, c = _chain(db, root, ["A", "B", "C"])
    db.commit()
    before = _events(database)
    for project, new_parent in ((a, a), (a, b), (a, c), (b, b), (b, c)):
        r = _move(client, project, new_parent)
        assert r.status_code == 409, (project.name, new_parent.name, r.text)
        assert r.json()["error"] == "conflict"
    assert _path_names(client, c) == ["A", "B"]
    assert _path_names(client, a) == []
    assert _events(database) == before


def test_reparent_to_an_unknown_project_is_404(client: TestClient, db: Session, settings: Settings) -> None:
    root = _admin(db, settings)
    _, b = _chain(db, root, ["A", "B"])
    db.commit()
    r = client.put(f"{PROJECTS}/{b.id}", json={"parent_id": 999999}, headers=ADMIN)
    assert r.status_code == 404


def test_reparent_to_top_level_only_for_admins(client: TestClient, db: Session, settings: Settings) -> None:
    root = _admin(db, settings)
    a, b, c = _chain(db, root, ["A", "B", "C"])
    manager = make_user(db, settings, "manager")
    grant(db, a, manager, "manager")
    db.commit()
    r = _move(client, b, None, "manager")
    assert r.status_code == 403, r.text
    assert _path_names(client, b) == ["A"]

    r = _move(client, b, None)
    assert r.status_code == 200, r.text
    assert r.json()["parent_id"] is None
    assert r.json()["path"] == []
    assert _path_names(client, c) == ["B"]
    # The manager of A no longer reaches the moved subtree.
    assert _get(client, c, "manager").status_code == 404


def test_moving_needs_manager_at_both_ends(client: TestClient, db: Session, settings: Settings) -> None:
    """Both ends of the move: the parent it leaves and the parent it joins."""
    root = _admin(db, settings)
    a, b, c = _chain(db, root, ["A", "B", "C"])
    d = make_project(db, root, "D")
    cases = {
        "only_source": [(a, "manager"), (d, "viewer")],  # may not put it into D
        "only_target": [(d, "manager")],  # cannot even see B
        "project_not_source": [(b, "manager"), (d, "manager")],  # B is not theirs to take from A
        "user_at_source": [(a, "user"), (b, "manager"), (d, "manager")],
        "both": [(a, "manager"), (d, "manager")],
    }
    for username, grants in cases.items():
        user = make_user(db, settings, username)
        for project, role in grants:
            grant(db, project, user, role)
    db.commit()
    assert _move(client, b, d, "only_source").status_code == 403
    assert _move(client, b, d, "only_target").status_code == 404
    assert _move(client, b, d, "project_not_source").status_code == 403
    assert _move(client, b, d, "user_at_source").status_code == 403
    assert _path_names(client, c) == ["A", "B"]

    r = _move(client, b, d, "both")
    assert r.status_code == 200, r.text
    assert [p["name"] for p in r.json()["path"]] == ["D"]
    assert _path_names(client, c) == ["D", "B"]
    # The closure table follows: C is below D and B, no longer below A.
    db.rollback()
    ancestors = set(
        db.scalars(select(ProjectClosure.ancestor_id).where(ProjectClosure.descendant_id == c.id))
    )
    assert ancestors == {c.id, b.id, d.id}
    subtree = set(db.scalars(select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == a.id)))
    assert subtree == {a.id}


def test_top_level_project_moves_down_only_by_an_admin(
    client: TestClient, db: Session, settings: Settings
) -> None:
    root = _admin(db, settings)
    a = make_project(db, root, "A")
    d = make_project(db, root, "D")
    owner = make_user(db, settings, "owner")
    grant(db, a, owner, "manager")
    grant(db, d, owner, "manager")
    db.commit()
    assert _move(client, a, d, "owner").status_code == 403
    assert _move(client, a, d).status_code == 200
    assert _path_names(client, a) == ["D"]


def test_move_refuses_datapoint_name_clashes_and_orphaned_values(
    client: TestClient, db: Session, settings: Settings
) -> None:
    root = _admin(db, settings)
    a, b = _chain(db, root, ["A", "B"])
    d = make_project(db, root, "D")
    e = make_project(db, root, "E")
    admin = as_caller(root)
    create_definition(db, admin, b.id, DatapointCreate(name="age", type="integer"))
    create_definition(db, admin, d.id, DatapointCreate(name="AGE", type="integer"))
    weight = create_definition(db, admin, a.id, DatapointCreate(name="weight", type="decimal"))
    _add_value(db, _add_patient(db, b), weight, 70.5)
    db.commit()
    r = _move(client, b, d)
    assert r.status_code == 409
    assert "age" in r.json()["message"].lower()
    r = _move(client, b, e)
    assert r.status_code == 409
    assert "1 datapoint values" in r.json()["message"]
    assert _path_names(client, b) == ["A"]


def test_move_refuses_separating_studies_from_their_patient(
    client: TestClient, db: Session, settings: Settings
) -> None:
    """A study lives in its patient's project or below it; a move must not break that."""
    root = _admin(db, settings)
    a, b, c = _chain(db, root, ["A", "B", "C"])
    d = make_project(db, root, "D")
    _add_study(db, _add_patient(db, a), c)
    db.commit()
    r = _move(client, b, d)
    assert r.status_code == 409
    assert "1 studies" in r.json()["message"]
    assert _path_names(client, c) == ["A", "B"]
    # Within the patient's project the study may move along.
    b2 = make_project(db, root, "B2", parent=a)
    db.commit()
    assert _move(client, c, b2).status_code == 200


# --- inheritance --------------------------------------------------------------------------------


def test_depth_ten_tree_keeps_inheritance_right(client: TestClient, db: Session, settings: Settings) -> None:
    root = _admin(db, settings)
    levels = _chain(db, root, [f"L{i}" for i in range(1, 11)])
    alice = make_user(db, settings, "alice")
    grant(db, levels[2], alice, "user")  # level 3
    grant(db, levels[6], alice, "manager")  # level 7
    grant(db, levels[8], alice, "viewer")  # level 9: lower than inherited, changes nothing
    db.commit()
    deepest = _get(client, levels[9], "alice")
    assert deepest.status_code == 200
    assert deepest.json()["my_role"] == "manager"
    assert [p["name"] for p in deepest.json()["path"]] == [f"L{i}" for i in range(1, 10)]
    assert [p["id"] for p in deepest.json()["path"]] == [p.id for p in levels[:9]]
    expected = {1: None, 2: None, 3: "user", 4: "user", 6: "user", 7: "manager", 9: "manager", 10: "manager"}
    for level, role in expected.items():
        r = _get(client, levels[level - 1], "alice")
        if role is None:
            assert r.status_code == 404, level
        else:
            assert r.status_code == 200, level
            assert r.json()["my_role"] == role, level
    listed = client.get(PROJECTS, headers=basic("alice")).json()
    assert {p["name"]: p["my_role"] for p in listed} == {
        f"L{i}": ("manager" if i >= 7 else "user") for i in range(3, 11)
    }
    # The path names ancestors the caller cannot open.
    assert _get(client, levels[1], "alice").status_code == 404
    # Revoking the grant on level 3 takes levels 3-6 away.
    assert client.delete(f"{PROJECTS}/{levels[6].id}/members/alice", headers=ADMIN).status_code == 200
    assert client.delete(f"{PROJECTS}/{levels[2].id}/members/alice", headers=ADMIN).status_code == 200
    assert _get(client, levels[5], "alice").status_code == 404
    assert _get(client, levels[9], "alice").json()["my_role"] == "viewer"


def test_admins_see_manager_and_path_excludes_the_project(
    client: TestClient, db: Session, settings: Settings
) -> None:
    root = _admin(db, settings)
    _, site = _chain(db, root, ["Trial", "Site"])
    db.commit()
    body = _get(client, site).json()
    assert body["my_role"] == "manager"
    assert body["path"] == [{"id": site.parent_id, "name": "Trial"}]
    assert body["creator"] == {"id": root.id, "username": "root", "full_name": "Root"}


def test_subprojects_direct_and_recursive(client: TestClient, db: Session, settings: Settings) -> None:
    root = _admin(db, settings)
    a, b, c = _chain(db, root, ["A", "B", "C"])
    b2 = make_project(db, root, "B2", parent=a)
    viewer = make_user(db, settings, "viewer")
    grant(db, b, viewer, "viewer")
    db.commit()
    direct = client.get(f"{PROJECTS}/{a.id}/subprojects", headers=ADMIN).json()
    assert [p["name"] for p in direct] == ["B", "B2"]
    every = client.get(f"{PROJECTS}/{a.id}/subprojects?recursive=true", headers=ADMIN).json()
    assert sorted(p["name"] for p in every) == ["B", "B2", "C"]
    assert client.get(f"{PROJECTS}/{a.id}/subprojects", headers=basic("viewer")).status_code == 404
    below_b = client.get(f"{PROJECTS}/{b.id}/subprojects", headers=basic("viewer")).json()
    assert [p["id"] for p in below_b] == [c.id]
    assert b2.id not in {p["id"] for p in client.get(PROJECTS, headers=basic("viewer")).json()}


# --- deleting -----------------------------------------------------------------------------------


def test_delete_refused_while_subprojects_exist(client: TestClient, db: Session, settings: Settings) -> None:
    root = _admin(db, settings)
    a, _ = _chain(db, root, ["A", "B"])
    db.commit()
    r = client.delete(f"{PROJECTS}/{a.id}", headers=ADMIN)
    assert r.status_code == 409
    assert "1 subprojects" in r.json()["message"]
    assert _get(client, a).status_code == 200


def test_delete_refused_while_patients_exist(client: TestClient, db: Session, settings: Settings) -> None:
    root = _admin(db, settings)
    a = make_project(db, root, "A")
    _add_patient(db, a)
    db.commit()
    r = client.delete(f"{PROJECTS}/{a.id}", headers=ADMIN)
    assert r.status_code == 409
    assert "1 patients" in r.json()["message"]
    assert _get(client, a).status_code == 200


def test_delete_refused_while_studies_of_a_patient_above_live_there(
    client: TestClient, db: Session, settings: Settings, database: Database
) -> None:
    root = _admin(db, settings)
    a, b = _chain(db, root, ["A", "B"])
    _add_study(db, _add_patient(db, a), b)
    db.commit()
    r = client.delete(f"{PROJECTS}/{b.id}", headers=ADMIN)
    assert r.status_code == 409
    assert "1 studies" in r.json()["message"]
    assert _get(client, b).status_code == 200
    r = client.delete(f"{PROJECTS}/{b.id}?force=true", headers=ADMIN)
    assert r.status_code == 200, r.text
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 0
        assert session.scalar(select(func.count()).select_from(Patient)) == 1  # the patient lives in A


def test_delete_empty_leaf_needs_no_force(client: TestClient, db: Session, settings: Settings) -> None:
    root = _admin(db, settings)
    a, b = _chain(db, root, ["A", "B"])
    db.commit()
    r = client.delete(f"{PROJECTS}/{b.id}", headers=ADMIN)
    assert r.status_code == 200
    assert r.json()["success"] is True
    assert _get(client, b).status_code == 404
    assert client.get(f"{PROJECTS}/{a.id}/subprojects", headers=ADMIN).json() == []


def test_forced_delete_removes_the_whole_subtree(client: TestClient, db: Session, settings: Settings) -> None:
    root = _admin(db, settings)
    a, b, c = _chain(db, root, ["A", "B", "C"])
    b2 = make_project(db, root, "B2", parent=a)
    keep = make_project(db, root, "Keep")
    alice = make_user(db, settings, "alice")
    grant(db, c, alice, "viewer")
    grant(db, keep, alice, "viewer")
    age = create_definition(db, as_caller(root), b.id, DatapointCreate(name="age", type="integer"))
    _add_value(db, _add_patient(db, c, "P-1"), age, 42)
    _add_patient(db, b2, "P-2")
    _add_patient(db, keep, "P-3")
    db.commit()
    r = client.delete(f"{PROJECTS}/{a.id}?force=true", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert "4 projects" in r.json()["message"]
    assert "2 patients" in r.json()["message"]
    for project in (a, b, c, b2):
        assert _get(client, project).status_code == 404
    db.rollback()
    assert set(db.scalars(select(Project.name))) == {"Keep"}
    assert set(db.scalars(select(Patient.patient_id))) == {"P-3"}
    assert db.scalar(select(func.count()).select_from(DatapointValue)) == 0
    assert db.scalar(select(func.count()).select_from(Datapoint)) == 0
    assert set(db.scalars(select(ProjectClosure.descendant_id))) == {keep.id}
    assert set(db.scalars(select(Membership.project_id))) == {keep.id}


# --- names and AE titles ------------------------------------------------------------------------


def test_sibling_names_are_unique_case_insensitively(
    client: TestClient, db: Session, settings: Settings
) -> None:
    root = _admin(db, settings)
    a = make_project(db, root, "A")
    other = make_project(db, root, "Other")
    make_project(db, root, "Site", parent=a)
    db.commit()
    for name in ("Site", "site", "SITE", " Site "):
        r = client.post(PROJECTS, json={"name": name, "parent_id": a.id}, headers=ADMIN)
        assert r.status_code == 409, name
        assert r.json()["error"] == "conflict"
    for name in ("a", "OTHER"):  # top-level names too
        assert client.post(PROJECTS, json={"name": name}, headers=ADMIN).status_code == 409
    r = client.post(PROJECTS, json={"name": "Site", "parent_id": other.id}, headers=ADMIN)
    assert r.status_code == 201, r.text
    moved_site = r.json()["id"]
    r = client.post(PROJECTS, json={"name": "Site 2", "parent_id": a.id}, headers=ADMIN)
    assert r.status_code == 201
    # Renaming onto a sibling, or moving next to a namesake, conflicts too.
    r = client.put(f"{PROJECTS}/{r.json()['id']}", json={"name": "sITE"}, headers=ADMIN)
    assert r.status_code == 409
    r = client.put(f"{PROJECTS}/{moved_site}", json={"parent_id": a.id}, headers=ADMIN)
    assert r.status_code == 409
    # Changing only the case of one's own name is fine.
    r = client.put(f"{PROJECTS}/{moved_site}", json={"name": "SITE"}, headers=ADMIN)
    assert r.status_code == 200
    assert r.json()["name"] == "SITE"


@pytest.mark.parametrize("name", ["Trial/Site", "", "   ", "tab\there"])
def test_project_names_refuse_slashes_and_blanks(
    client: TestClient, db: Session, settings: Settings, name: str
) -> None:
    _admin(db, settings)
    db.commit()
    r = client.post(PROJECTS, json={"name": name}, headers=ADMIN)
    assert r.status_code == 400
    assert r.json()["details"][0]["field"] == "name"


def test_dicom_ae_title_is_unique(client: TestClient, db: Session, settings: Settings) -> None:
    root = _admin(db, settings)
    a = make_project(db, root, "A", dicom_ae_title="TRIAL_A")
    b = make_project(db, root, "B")
    db.commit()
    r = client.post(PROJECTS, json={"name": "C", "dicom_ae_title": "TRIAL_A"}, headers=ADMIN)
    assert r.status_code == 409
    assert "TRIAL_A" in r.json()["message"]
    r = client.put(f"{PROJECTS}/{b.id}", json={"dicom_ae_title": "TRIAL_A"}, headers=ADMIN)
    assert r.status_code == 409
    # Setting a project's own title again is no conflict; clearing it frees the title.
    r = client.put(
        f"{PROJECTS}/{a.id}", json={"dicom_ae_title": "TRIAL_A", "description": "x"}, headers=ADMIN
    )
    assert r.status_code == 200
    assert client.put(f"{PROJECTS}/{a.id}", json={"dicom_ae_title": None}, headers=ADMIN).status_code == 200
    r = client.put(f"{PROJECTS}/{b.id}", json={"dicom_ae_title": "TRIAL_A"}, headers=ADMIN)
    assert r.status_code == 200
    assert r.json()["dicom_ae_title"] == "TRIAL_A"
    r = client.post(PROJECTS, json={"name": "D", "dicom_ae_title": "BAD\\TITLE"}, headers=ADMIN)
    assert r.status_code == 400


# --- listing ------------------------------------------------------------------------------------


def test_search_is_case_insensitive_over_name_and_description_and_literal(
    client: TestClient, db: Session, settings: Settings
) -> None:
    root = _admin(db, settings)
    make_project(db, root, "Alpha 100%", description="first")
    make_project(db, root, "Beta_test", description="Second of the ALPHA family")
    make_project(db, root, "Gamma", description="nothing")
    make_project(db, root, "Delta", description="back\\slash")
    db.commit()

    def search(text: str) -> list[str]:
        r = client.get(PROJECTS, params={"search": text}, headers=ADMIN)
        assert r.status_code == 200
        return sorted(p["name"] for p in r.json())

    assert search("alpha") == ["Alpha 100%", "Beta_test"]
    assert search("SECOND") == ["Beta_test"]
    assert search("%") == ["Alpha 100%"]
    assert search("0%") == ["Alpha 100%"]
    assert search("a_") == ["Beta_test"]  # "_" is no wildcard: "a " would match it
    assert search("\\") == ["Delta"]
    assert search("zzz") == []


def test_search_only_within_what_the_caller_sees(client: TestClient, db: Session, settings: Settings) -> None:
    root = _admin(db, settings)
    seen = make_project(db, root, "Seen study")
    make_project(db, root, "Hidden study")
    alice = make_user(db, settings, "alice")
    grant(db, seen, alice, "viewer")
    db.commit()
    r = client.get(PROJECTS, params={"search": "study"}, headers=basic("alice"))
    assert [p["name"] for p in r.json()] == ["Seen study"]
    assert r.headers["x-total-count"] == "1"


def test_parent_id_filter(client: TestClient, db: Session, settings: Settings) -> None:
    root = _admin(db, settings)
    a, b, _ = _chain(db, root, ["A", "B", "C"])
    make_project(db, root, "B2", parent=a)
    db.commit()
    r = client.get(PROJECTS, params={"parent_id": a.id}, headers=ADMIN)
    assert sorted(p["name"] for p in r.json()) == ["B", "B2"]
    r = client.get(PROJECTS, params={"parent_id": b.id}, headers=ADMIN)
    assert [p["name"] for p in r.json()] == ["C"]
    assert client.get(PROJECTS, params={"parent_id": 999999}, headers=ADMIN).json() == []


def test_paging_with_after_and_offset(client: TestClient, db: Session, settings: Settings) -> None:
    root = _admin(db, settings)
    projects = [make_project(db, root, f"P{i}") for i in range(5)]
    db.commit()
    ids = [p.id for p in projects]

    seen: list[int] = []
    url: str | None = f"{PROJECTS}?limit=2"
    while url:
        r = client.get(url, headers=ADMIN)
        assert r.status_code == 200
        assert r.headers["x-total-count"] == "5"
        seen += [p["id"] for p in r.json()]
        link = r.headers.get("link")
        if link:
            assert link.endswith('>; rel="next"')
            assert f"after={seen[-1]}" in link
            url = link[1 : link.index(">")]
        else:
            url = None
    assert seen == ids

    r = client.get(PROJECTS, params={"limit": 2, "offset": 2}, headers=ADMIN)
    assert [p["id"] for p in r.json()] == ids[2:4]
    assert "offset=4" in r.headers["link"]
    r = client.get(PROJECTS, params={"limit": 2, "offset": 4}, headers=ADMIN)
    assert [p["id"] for p in r.json()] == ids[4:]
    assert "link" not in r.headers
    r = client.get(PROJECTS, params={"after": ids[2]}, headers=ADMIN)
    assert [p["id"] for p in r.json()] == ids[3:]

    assert client.get(PROJECTS, params={"limit": 1000}, headers=ADMIN).status_code == 200
    for bad in ({"limit": 1001}, {"limit": 0}, {"offset": -1}, {"offset": 1, "after": 1}):
        r = client.get(PROJECTS, params=bad, headers=ADMIN)
        assert r.status_code == 400, bad
        assert r.json()["error"] == "invalid_request"
    assert (
        client.get(PROJECTS, params={"limit": 1001}, headers=ADMIN).json()["details"][0]["field"] == "limit"
    )


def test_every_list_pages(client: TestClient, db: Session, settings: Settings) -> None:
    root = _admin(db, settings)
    a = make_project(db, root, "A")
    for name in ("B", "C"):
        make_project(db, root, name, parent=a)
    for name in ("u1", "u2"):
        grant(db, a, make_user(db, settings, name), "viewer")
    for name in ("x", "y"):
        create_definition(db, as_caller(root), a.id, DatapointCreate(name=name, type="string"))
    db.commit()
    for what in ("subprojects", "members", "datapoints", "audit"):
        r = client.get(f"{PROJECTS}/{a.id}/{what}?limit=1", headers=ADMIN)
        assert r.status_code == 200, what
        assert len(r.json()) == 1, what
        assert int(r.headers["x-total-count"]) >= 2, what
        assert 'rel="next"' in r.headers["link"], what
        assert client.get(f"{PROJECTS}/{a.id}/{what}?limit=1001", headers=ADMIN).status_code == 400


# --- ETags and bodies ---------------------------------------------------------------------------


def test_etag_and_if_match(client: TestClient, db: Session, settings: Settings) -> None:
    root = _admin(db, settings)
    a = make_project(db, root, "A")
    db.commit()
    url = f"{PROJECTS}/{a.id}"
    first = client.get(url, headers=ADMIN).headers["etag"]
    assert first.startswith('"') and first.endswith('"')
    assert client.get(url, headers=ADMIN).headers["etag"] == first  # stable while unchanged

    r = client.put(url, json={"description": "one"}, headers={**ADMIN, "If-Match": first})
    assert r.status_code == 200
    second = r.headers["etag"]
    assert second != first
    assert client.get(url, headers=ADMIN).headers["etag"] == second

    r = client.put(url, json={"description": "lost"}, headers={**ADMIN, "If-Match": first})
    assert r.status_code == 412
    assert r.json()["error"] == "precondition_failed"
    assert client.delete(url, headers={**ADMIN, "If-Match": first}).status_code == 412
    assert client.get(url, headers=ADMIN).json()["description"] == "one"

    assert client.put(url, json={"name": "A1"}, headers={**ADMIN, "If-Match": "*"}).status_code == 200
    third = client.get(url, headers=ADMIN).headers["etag"]
    assert client.delete(url, headers={**ADMIN, "If-Match": f'W/{third}, "other"'}).status_code == 200
    assert client.get(url, headers=ADMIN).status_code == 404


def test_created_project_carries_its_etag(client: TestClient, db: Session, settings: Settings) -> None:
    _admin(db, settings)
    db.commit()
    r = client.post(PROJECTS, json={"name": "New", "description": "d"}, headers=ADMIN)
    assert r.status_code == 201
    assert r.json()["my_role"] == "manager"
    assert r.headers["etag"] == _get(client, r.json()["id"]).headers["etag"]


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("POST", "", {"name": "X", "colour": "red", "size": 3}),
        ("PUT", "/{id}", {"description": "x", "colour": "red", "size": 3}),
        ("PUT", "/{id}/members/root", {"role": "viewer", "colour": "red", "size": 3}),
    ],
)
def test_unknown_body_fields_are_refused_by_name(
    client: TestClient, db: Session, settings: Settings, method: str, suffix: str, body: dict[str, Any]
) -> None:
    root = _admin(db, settings)
    a = make_project(db, root, "A")
    db.commit()
    r = client.request(method, PROJECTS + suffix.format(id=a.id), json=body, headers=ADMIN)
    assert r.status_code == 400
    details = r.json()["details"]
    assert {d["field"] for d in details} == {"colour", "size"}
    assert all(d["message"] == "unknown field" for d in details)
    assert "colour" in r.json()["message"]


def test_partial_update_changes_only_given_fields(
    client: TestClient, db: Session, settings: Settings
) -> None:
    root = _admin(db, settings)
    a, b = _chain(db, root, ["A", "B"])
    db.commit()
    r = client.put(f"{PROJECTS}/{b.id}", json={"description": "new"}, headers=ADMIN)
    assert r.status_code == 200
    assert (r.json()["name"], r.json()["description"], r.json()["parent_id"]) == ("B", "new", a.id)
    for field in ("name", "description"):
        r = client.put(f"{PROJECTS}/{b.id}", json={field: None}, headers=ADMIN)
        assert r.status_code == 400, field
        assert r.json()["details"][0]["field"] == field
