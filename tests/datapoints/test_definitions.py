"""Datapoint definitions through the HTTP API: type rules, names across the lineage, 409s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.datapoints.values import typed_value
from ipacs.db.engine import Database
from ipacs.models import Datapoint, DatapointValue, Patient, Project
from tests.factories import basic, grant, make_project, make_user

PROJECTS = "/api/v1.0/projects"
ADMIN = basic("root")


@dataclass
class Lineage:
    trial: Project
    site: Project
    cohort: Project
    sibling: Project  # another site under the trial


@pytest.fixture
def tree(db: Session, settings: Settings) -> Lineage:
    """Trial / Site / Cohort, and Trial / Site 2; `manager` manages Site, `member` is a user there."""
    root = make_user(db, settings, "root", is_admin=True)
    trial = make_project(db, root, "Trial")
    site = make_project(db, root, "Site", parent=trial)
    cohort = make_project(db, root, "Cohort", parent=site)
    sibling = make_project(db, root, "Site 2", parent=trial)
    grant(db, site, make_user(db, settings, "manager"), "manager")
    grant(db, site, make_user(db, settings, "member"), "user")
    grant(db, sibling, make_user(db, settings, "other"), "manager")
    db.commit()
    return Lineage(trial, site, cohort, sibling)


def _url(project: Project, datapoint: int | None = None) -> str:
    return f"{PROJECTS}/{project.id}/datapoints" + ("" if datapoint is None else f"/{datapoint}")


def _create(client: TestClient, project: Project, who: str = "root", **body: Any) -> Any:
    return client.post(_url(project), json=body, headers=basic(who))


def _created(client: TestClient, project: Project, **body: Any) -> int:
    r = _create(client, project, **body)
    assert r.status_code == 201, r.text
    assert r.json()["success"] is True
    return int(r.json()["id"])


def _fields(r: Any) -> set[str]:
    assert r.status_code == 400, r.text
    return {d["field"] for d in r.json()["details"]}


def _store_values(db: Session, project: Project, datapoint_id: int, raws: list[Any]) -> None:
    """Values written straight to the table, one patient each, as the values API would."""
    datapoint = db.get(Datapoint, datapoint_id)
    assert datapoint is not None
    for i, raw in enumerate(raws):
        patient = Patient(project_id=project.id, patient_id=f"DP-{datapoint_id}-{i}")
        db.add(patient)
        db.flush()
        typed = typed_value(datapoint.type, raw, choices=datapoint.choices)
        db.add(
            DatapointValue(
                datapoint_id=datapoint_id,
                patient_id=patient.id,
                value=typed.value,
                num_value=typed.num,
                text_value=typed.text,
            )
        )
    db.commit()


def _value_count(database: Database, datapoint_id: int) -> int:
    with database.session() as session:
        stmt = (
            select(func.count())
            .select_from(DatapointValue)
            .where(DatapointValue.datapoint_id == datapoint_id)
        )
        return session.scalar(stmt) or 0


# --- each type's rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"type": "string"},
        {"type": "string", "pattern": r"^[A-Z]{2}-\d+$", "unit": None, "label": "Code"},
        {"type": "integer", "minimum": 0, "maximum": 120, "unit": "years"},
        {"type": "integer", "minimum": 5, "maximum": 5},
        {"type": "integer", "minimum": 1.0},  # a whole float is an integer
        {"type": "decimal", "minimum": -1.5, "maximum": 2},
        {"type": "boolean", "required": True},
        {"type": "date", "minimum": "2000-01-01", "maximum": "2030-12-31"},
        {"type": "datetime", "minimum": "2024-01-01T00:00:00Z", "maximum": "2024-06-01T12:00:00+02:00"},
        {"type": "choice", "choices": ["A", "B", "placebo"]},
    ],
)
def test_valid_definitions_are_created(client: TestClient, tree: Lineage, body: dict[str, Any]) -> None:
    datapoint = _created(client, tree.site, name="field", **body)
    r = client.get(_url(tree.site, datapoint), headers=ADMIN)
    assert r.status_code == 200
    out = r.json()
    assert out["name"] == "field"
    assert out["type"] == body["type"]
    assert out["project_id"] == tree.site.id
    assert out["creator"]["username"] == "root"
    assert r.headers["etag"]
    for key in ("choices", "pattern", "unit", "label", "required"):
        if key in body:
            assert out[key] == body[key], key


def test_bounds_come_back_in_canonical_form(client: TestClient, tree: Lineage) -> None:
    datapoint = _created(client, tree.site, name="seen", type="datetime", minimum="2024-01-01T02:00:00+02:00")
    assert client.get(_url(tree.site, datapoint), headers=ADMIN).json()["minimum"] == "2024-01-01T00:00:00Z"
    datapoint = _created(client, tree.site, name="count", type="integer", maximum=7.0)
    assert client.get(_url(tree.site, datapoint), headers=ADMIN).json()["maximum"] == 7


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # choices: required for choice, refused otherwise, distinct and non-empty
        ({"type": "choice"}, "choices"),
        ({"type": "choice", "choices": []}, "choices"),
        ({"type": "choice", "choices": ["A", "B", "A"]}, "choices"),
        ({"type": "choice", "choices": ["A", ""]}, "choices"),
        ({"type": "choice", "choices": ["A", "   "]}, "choices"),
        ({"type": "string", "choices": ["A"]}, "choices"),
        ({"type": "integer", "choices": ["1", "2"]}, "choices"),
        ({"type": "boolean", "choices": []}, "choices"),
        # minimum/maximum: only integer, decimal, date, datetime; typed; min <= max
        ({"type": "string", "minimum": 1}, "minimum"),
        ({"type": "boolean", "maximum": 1}, "maximum"),
        ({"type": "choice", "choices": ["A"], "minimum": "A"}, "minimum"),
        ({"type": "integer", "minimum": "5"}, "minimum"),
        ({"type": "integer", "maximum": 5.5}, "maximum"),
        ({"type": "integer", "minimum": True}, "minimum"),
        ({"type": "decimal", "minimum": "1.5"}, "minimum"),
        ({"type": "date", "minimum": "2024-13-01"}, "minimum"),
        ({"type": "date", "minimum": 20240101}, "minimum"),
        ({"type": "date", "maximum": "01/02/2024"}, "maximum"),
        ({"type": "datetime", "minimum": "yesterday"}, "minimum"),
        ({"type": "integer", "minimum": 10, "maximum": 9}, "minimum"),
        ({"type": "decimal", "minimum": 0.5, "maximum": 0.25}, "minimum"),
        ({"type": "date", "minimum": "2024-02-01", "maximum": "2024-01-31"}, "minimum"),
        (
            {"type": "datetime", "minimum": "2024-01-01T10:00:00Z", "maximum": "2024-01-01T11:00:00+02:00"},
            "minimum",
        ),
        # pattern: a valid regular expression, strings only
        ({"type": "string", "pattern": "(unclosed"}, "pattern"),
        ({"type": "string", "pattern": "[z-a]"}, "pattern"),
        ({"type": "integer", "pattern": r"^\d+$"}, "pattern"),
        ({"type": "choice", "choices": ["A"], "pattern": "A"}, "pattern"),
        # the type itself
        ({"type": "float"}, "type"),
        ({}, "type"),
    ],
)
def test_type_rules_are_enforced(client: TestClient, tree: Lineage, body: dict[str, Any], field: str) -> None:
    r = _create(client, tree.site, name="field", **body)
    assert field in _fields(r), r.text
    assert r.json()["error"] == "invalid_request"
    assert client.get(_url(tree.site), headers=ADMIN).json() == []


@pytest.mark.parametrize("name", ["1st", "_hidden", "with-dash", "with space", "", "ä", "a.b", "x" * 65])
def test_name_pattern(client: TestClient, tree: Lineage, name: str) -> None:
    assert _fields(_create(client, tree.site, name=name, type="string")) == {"name"}


@pytest.mark.parametrize("name", ["a", "Age", "age_2", "BMI_at_baseline", "x" * 64])
def test_name_pattern_accepts(client: TestClient, tree: Lineage, name: str) -> None:
    _created(client, tree.site, name=name, type="string")


def test_missing_name_and_unknown_fields(client: TestClient, tree: Lineage) -> None:
    assert _fields(_create(client, tree.site, type="string")) == {"name"}
    r = _create(client, tree.site, name="x", type="string", colour="red")
    assert _fields(r) == {"colour"}
    assert r.json()["details"][0]["message"] == "unknown field"


# --- names across the lineage -------------------------------------------------------------------


def test_names_are_unique_across_ancestors_and_descendants(client: TestClient, tree: Lineage) -> None:
    _created(client, tree.site, name="age", type="integer")
    for project, name in (
        (tree.site, "age"),
        (tree.site, "AGE"),
        (tree.trial, "Age"),  # an ancestor
        (tree.cohort, "aGe"),  # a descendant
    ):
        r = _create(client, project, name=name, type="string")
        assert r.status_code == 409, (project.name, name)
        assert r.json()["error"] == "conflict"
        assert name in r.json()["message"]
    # A sibling's lineage does not include Site: the name is free there.
    _created(client, tree.sibling, name="Age", type="decimal")
    # Renaming into a clash is refused as well, case-insensitively.
    weight = _created(client, tree.cohort, name="weight", type="decimal")
    r = client.put(_url(tree.cohort, weight), json={"name": "AGE"}, headers=ADMIN)
    assert r.status_code == 409
    # Changing only the case of one's own name is fine.
    r = client.put(_url(tree.cohort, weight), json={"name": "Weight"}, headers=ADMIN)
    assert r.status_code == 200
    assert r.json()["name"] == "Weight"


def test_list_shows_own_and_ancestors_definitions_only(client: TestClient, tree: Lineage) -> None:
    on_trial = _created(client, tree.trial, name="sex", type="choice", choices=["F", "M"])
    on_site = _created(client, tree.site, name="age", type="integer")
    on_cohort = _created(client, tree.cohort, name="arm", type="string")
    on_sibling = _created(client, tree.sibling, name="height", type="decimal")

    def listed(project: Project, who: str = "root") -> list[int]:
        r = client.get(_url(project), headers=basic(who))
        assert r.status_code == 200
        assert r.headers["x-total-count"] == str(len(r.json()))
        return [d["id"] for d in r.json()]

    assert listed(tree.trial) == [on_trial]
    assert listed(tree.site) == [on_trial, on_site]
    assert listed(tree.cohort) == [on_trial, on_site, on_cohort]
    assert listed(tree.sibling) == [on_trial, on_sibling]
    # A role on Site shows the Trial's definitions there, without opening the Trial.
    assert listed(tree.site, "member") == [on_trial, on_site]
    assert client.get(_url(tree.trial), headers=basic("member")).status_code == 404
    # One definition: readable where it applies, 404 elsewhere.
    assert client.get(_url(tree.cohort, on_trial), headers=ADMIN).status_code == 200
    assert client.get(_url(tree.site, on_cohort), headers=ADMIN).status_code == 404
    assert client.get(_url(tree.sibling, on_site), headers=ADMIN).status_code == 404
    assert client.get(_url(tree.site, 999999), headers=ADMIN).status_code == 404


def test_search_over_name_label_and_description(client: TestClient, tree: Lineage) -> None:
    _created(client, tree.trial, name="bmi", type="decimal", label="Body mass index")
    _created(client, tree.site, name="age", type="integer", description="Age at BASELINE visit")
    _created(client, tree.site, name="visit_date", type="date")
    _created(client, tree.site, name="pct", type="decimal", label="100% done")

    def search(text: str) -> list[str]:
        r = client.get(_url(tree.site), params={"search": text}, headers=ADMIN)
        assert r.status_code == 200
        return sorted(d["name"] for d in r.json())

    assert search("MASS") == ["bmi"]
    assert search("baseline") == ["age"]
    assert search("visit") == ["age", "visit_date"]
    assert search("BMI") == ["bmi"]
    assert search("%") == ["pct"]
    # "_" is literal: as a wildcard it would match "it " in "... visit" and "e " in "Age at".
    assert search("it_") == ["visit_date"]
    assert search("e_") == []
    assert search("nothing") == []


# --- changes that values would break ------------------------------------------------------------


def test_update_that_values_would_break_is_409_with_the_count(
    client: TestClient, db: Session, database: Database, tree: Lineage
) -> None:
    age = _created(client, tree.site, name="age", type="integer", minimum=0)
    _store_values(db, tree.cohort, age, [5, 50, 500, 90])
    url = _url(tree.site, age)
    for change, broken in (
        ({"maximum": 100}, 1),
        ({"minimum": 60}, 2),
        ({"minimum": 10, "maximum": 80}, 3),
        ({"type": "string"}, 4),
        ({"type": "boolean"}, 4),
        ({"type": "choice", "choices": ["5"]}, 4),
    ):
        r = client.put(url, json=change, headers=ADMIN)
        assert r.status_code == 409, (change, r.text)
        assert r.json()["error"] == "conflict"
        assert f"{broken} existing values" in r.json()["message"], change
    unchanged = client.get(url, headers=ADMIN).json()
    assert (unchanged["type"], unchanged["minimum"], unchanged["maximum"]) == ("integer", 0, None)
    # Changes every value survives go through.
    r = client.put(url, json={"maximum": 500, "label": "Age"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert (r.json()["maximum"], r.json()["label"]) == (500, "Age")
    r = client.put(url, json={"type": "decimal", "minimum": 0.5}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["maximum"] is None  # a new type drops the old bounds unless given again
    assert _value_count(database, age) == 4


def test_choice_and_pattern_changes_count_broken_values(
    client: TestClient, db: Session, tree: Lineage
) -> None:
    arm = _created(client, tree.site, name="arm", type="choice", choices=["A", "B", "C"])
    code = _created(client, tree.site, name="code", type="string")
    when = _created(client, tree.site, name="seen", type="date")
    _store_values(db, tree.site, arm, ["A", "B", "B"])
    _store_values(db, tree.site, code, ["AB-1", "ab-2", "XY-33"])
    _store_values(db, tree.site, when, ["2024-01-01", "2024-06-30"])
    r = client.put(_url(tree.site, arm), json={"choices": ["A", "C"]}, headers=ADMIN)
    assert r.status_code == 409
    assert "2 existing values" in r.json()["message"]
    r = client.put(_url(tree.site, arm), json={"choices": ["A", "B"]}, headers=ADMIN)
    assert r.status_code == 200
    r = client.put(_url(tree.site, code), json={"pattern": r"[A-Z]{2}-\d"}, headers=ADMIN)
    assert r.status_code == 409
    assert "2 existing values" in r.json()["message"]
    r = client.put(_url(tree.site, code), json={"pattern": r"[A-Za-z]{2}-\d+"}, headers=ADMIN)
    assert r.status_code == 200
    r = client.put(_url(tree.site, when), json={"maximum": "2024-03-01"}, headers=ADMIN)
    assert r.status_code == 409
    assert "1 existing values" in r.json()["message"]


def test_update_rules_are_the_create_rules(client: TestClient, tree: Lineage) -> None:
    arm = _created(client, tree.site, name="arm", type="choice", choices=["A"])
    age = _created(client, tree.site, name="age", type="integer")
    for url, change, field in (
        (_url(tree.site, arm), {"choices": []}, "choices"),
        (_url(tree.site, arm), {"choices": ["A", "A"]}, "choices"),
        (_url(tree.site, arm), {"minimum": 1}, "minimum"),
        (_url(tree.site, age), {"choices": ["1"]}, "choices"),
        (_url(tree.site, age), {"pattern": "x"}, "pattern"),
        (_url(tree.site, age), {"minimum": 3, "maximum": 2}, "minimum"),
        (_url(tree.site, age), {"type": "choice"}, "choices"),
        (_url(tree.site, age), {"name": "9lives"}, "name"),
        (_url(tree.site, age), {"name": None}, "name"),
        (_url(tree.site, age), {"type": None}, "type"),
        (_url(tree.site, age), {"required": None}, "required"),
        (_url(tree.site, age), {"nickname": "x"}, "nickname"),
    ):
        assert field in _fields(client.put(url, json=change, headers=ADMIN)), change
    # A type change carries what the new type needs.
    r = client.put(_url(tree.site, age), json={"type": "choice", "choices": ["young", "old"]}, headers=ADMIN)
    assert r.status_code == 200
    assert r.json()["choices"] == ["young", "old"]
    r = client.put(_url(tree.site, arm), json={"type": "string"}, headers=ADMIN)
    assert r.status_code == 200
    assert r.json()["choices"] is None


def test_delete_with_values_needs_force(
    client: TestClient, db: Session, database: Database, tree: Lineage
) -> None:
    age = _created(client, tree.site, name="age", type="integer")
    empty = _created(client, tree.site, name="empty", type="integer")
    _store_values(db, tree.cohort, age, [1, 2, 3])
    r = client.delete(_url(tree.site, age), headers=ADMIN)
    assert r.status_code == 409
    assert "3 values" in r.json()["message"]
    assert _value_count(database, age) == 3
    assert client.get(_url(tree.site, age), headers=ADMIN).status_code == 200

    r = client.delete(_url(tree.site, age), params={"force": "true"}, headers=ADMIN)
    assert r.status_code == 200
    assert "3 values" in r.json()["message"]
    assert client.get(_url(tree.site, age), headers=ADMIN).status_code == 404
    assert _value_count(database, age) == 0
    with database.session() as session:  # the patients stay
        assert session.scalar(select(func.count()).select_from(Patient)) == 3

    assert client.delete(_url(tree.site, empty), headers=ADMIN).status_code == 200
    assert client.delete(_url(tree.site, empty), headers=ADMIN).status_code == 404


# --- who may change definitions -----------------------------------------------------------------


def test_managers_only(client: TestClient, tree: Lineage) -> None:
    age = _created(client, tree.site, name="age", type="integer")
    on_trial = _created(client, tree.trial, name="sex", type="string")
    for who, status in (("member", 403), ("other", 404), ("manager", 201)):
        r = _create(client, tree.site, who, name=f"by_{who}", type="string")
        assert r.status_code == status, who
    for who, status in (("member", 403), ("other", 404), ("manager", 200)):
        r = client.put(_url(tree.site, age), json={"label": who}, headers=basic(who))
        assert r.status_code == status, who
    # A manager of Site reads the Trial's definition but cannot change it, from anywhere.
    assert client.get(_url(tree.site, on_trial), headers=basic("manager")).status_code == 200
    assert (
        client.put(_url(tree.site, on_trial), json={"label": "x"}, headers=basic("manager")).status_code
        == 404
    )
    assert (
        client.put(_url(tree.trial, on_trial), json={"label": "x"}, headers=basic("manager")).status_code
        == 404
    )
    assert client.delete(_url(tree.site, on_trial), headers=basic("manager")).status_code == 404
    # The manager of Site manages the Cohort's definitions too (inherited role).
    assert _create(client, tree.cohort, "manager", name="arm", type="string").status_code == 201
    for who, status in (("member", 403), ("other", 404), ("manager", 200)):
        assert client.delete(_url(tree.site, age), headers=basic(who)).status_code == status, who


def test_etag_and_if_match(client: TestClient, tree: Lineage) -> None:
    r = _create(client, tree.site, name="age", type="integer")
    created_tag = r.headers["etag"]
    url = _url(tree.site, r.json()["id"])
    assert client.get(url, headers=ADMIN).headers["etag"] == created_tag
    r = client.put(url, json={"label": "Age"}, headers={**ADMIN, "If-Match": created_tag})
    assert r.status_code == 200
    assert r.headers["etag"] != created_tag
    r = client.put(url, json={"label": "Lost"}, headers={**ADMIN, "If-Match": created_tag})
    assert r.status_code == 412
    assert client.delete(url, headers={**ADMIN, "If-Match": created_tag}).status_code == 412
    assert client.get(url, headers=ADMIN).json()["label"] == "Age"
    current = client.get(url, headers=ADMIN).headers["etag"]
    assert client.delete(url, headers={**ADMIN, "If-Match": current}).status_code == 200


def _stored_forms(database: Database, datapoint_id: int) -> list[tuple[Any, float | None, str | None]]:
    with database.session() as session:
        rows = session.execute(
            select(DatapointValue.value, DatapointValue.num_value, DatapointValue.text_value)
            .where(DatapointValue.datapoint_id == datapoint_id)
            .order_by(DatapointValue.id)
        )
        return [tuple(row) for row in rows]


def test_a_type_change_rewrites_the_stored_forms_of_values(
    client: TestClient, db: Session, database: Database, tree: Lineage
) -> None:
    """Queries compare the sortable forms, so they must be the new type's, not the old one's."""
    seen = _created(client, tree.site, name="seen", type="datetime")
    code = _created(client, tree.site, name="code", type="string")
    dose = _created(client, tree.site, name="dose", type="decimal")
    _store_values(db, tree.site, seen, ["2024-03-01T10:00:00+02:00"])
    _store_values(db, tree.site, code, ["2024-03-01 08:00:00"])
    _store_values(db, tree.site, dose, [5.0])
    assert _stored_forms(database, seen) == [("2024-03-01T08:00:00Z", None, "2024-03-01T08:00:00.000000Z")]

    assert client.put(_url(tree.site, seen), json={"type": "string"}, headers=ADMIN).status_code == 200
    assert _stored_forms(database, seen) == [("2024-03-01T08:00:00Z", None, "2024-03-01T08:00:00Z")]
    assert client.put(_url(tree.site, code), json={"type": "datetime"}, headers=ADMIN).status_code == 200
    assert _stored_forms(database, code) == [("2024-03-01T08:00:00Z", None, "2024-03-01T08:00:00.000000Z")]
    assert client.put(_url(tree.site, dose), json={"type": "integer"}, headers=ADMIN).status_code == 200
    [(value, num, text)] = _stored_forms(database, dose)
    assert (value, type(value), num, text) == (5, int, 5.0, None)
