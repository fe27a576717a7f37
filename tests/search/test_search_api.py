"""POST /projects/{id}/search: scope and permissions, keyset paging, total, values, studies, errors."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.models import Patient
from tests.patients.world import API, MISSING, error, ok
from tests.search.world import INJECTION_ID, SearchWorld, found_ids, make_search_world, search

EVERY_TRIAL_PATIENT = ("trial/T1", "trial/T2", "trial/T3", "site_a/A1", "site_a/A2", "site_b/B1")


@pytest.fixture
def world(client: TestClient, db: Session, settings: Settings) -> SearchWorld:
    return make_search_world(client, db, settings)


def _all_trial(world: SearchWorld) -> list[int]:
    return world.pks(*EVERY_TRIAL_PATIENT, f"site_b/{INJECTION_ID}")


# --- scope and permissions ----------------------------------------------------


def test_searches_the_project_and_its_subprojects(client: TestClient, world: SearchWorld) -> None:
    body = ok(search(client, world.trial, "viewer", "age >= 0"))
    ids = [r["id"] for r in body["results"]]
    expected = world.pks(
        "trial/T1", "trial/T2", "site_a/A1", "site_a/A2", "site_b/B1", f"site_b/{INJECTION_ID}"
    )
    assert ids == expected
    assert body["total"] == len(expected) and body["next_after"] is None
    first = body["results"][0]
    assert first == {**world.patients[("trial", "T1")], "values": None}
    # A subproject alone: its own patients only.
    assert found_ids(search(client, world.projects["site_a"], "viewer", "age >= 0")) == world.pks(
        "site_a/A1", "site_a/A2"
    )


def test_a_user_of_a_sibling_project_gets_404(client: TestClient, world: SearchWorld) -> None:
    for project in ("trial", "site_a", "site_b"):
        error(search(client, world.projects[project], "outsider"), 404, "not_found")
    error(search(client, MISSING, "outsider"), 404, "not_found")
    # In its own project it sees its own patients only, never Trial's T1 of the same PatientID.
    assert found_ids(search(client, world.projects["other"], "outsider", "patient.patient_id = 'T1'")) == [
        world.pk("other", "T1")
    ]
    # Trial's datapoints do not apply there: naming one is an unknown field, not a leak.
    body = error(search(client, world.projects["other"], "outsider", "age >= 0"), 400, "invalid_request")
    assert body["details"][0]["position"] == 0
    assert "unknown field 'age'" in body["details"][0]["message"]


def test_a_subproject_viewer_cannot_search_the_parent_nor_a_sibling_subproject(
    client: TestClient, world: SearchWorld
) -> None:
    error(search(client, world.trial, "site_viewer"), 404, "not_found")
    error(search(client, world.projects["site_b"], "site_viewer"), 404, "not_found")
    error(search(client, world.projects["other"], "site_viewer"), 404, "not_found")
    site_a = world.projects["site_a"]
    # Queries that would match patients of Site B, Trial or Other if the scope leaked.
    for query in (
        "",
        "age >= 0",
        "arm = 'A'",
        "NOT arm = 'A'",
        "age IS NULL",
        "NOT age IS NULL OR age IS NULL",
        "patient.patient_id IN ('T1', 'B1', 'A1')",
        "study.modalities = 'CT' OR study.modalities = 'MR'",
        "NOT study.visit = 'nothing'",
    ):
        found = set(found_ids(search(client, site_a, "site_viewer", query, limit=1000)))
        assert found <= set(world.pks("site_a/A1", "site_a/A2")), query
    assert found_ids(search(client, site_a, "site_viewer", "arm = 'A'")) == [world.pk("site_a", "A2")]


def test_studies_target_is_scoped_too(client: TestClient, world: SearchWorld) -> None:
    everything = "study.modalities = 'CT' OR study.modalities = 'MR'"
    found = found_ids(search(client, world.projects["site_a"], "site_viewer", everything, target="studies"))
    assert found == [world.studies["A1 week 12"]]
    found = found_ids(search(client, world.trial, "viewer", everything, target="studies"))
    assert found == sorted(
        world.studies[k] for k in ("T1 baseline", "T1 week 24", "A1 week 12", "B1 baseline")
    )


def test_anonymous_is_401(client: TestClient, world: SearchWorld) -> None:
    client.cookies.clear()
    r = client.post(f"{API}/projects/{world.trial}/search", json={"query": ""})
    error(r, 401, "unauthorized")


# --- results, paging, total ---------------------------------------------------


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_an_empty_query_matches_everything_in_scope(
    client: TestClient, world: SearchWorld, query: str
) -> None:
    body = ok(search(client, world.trial, "viewer", query))
    assert [r["id"] for r in body["results"]] == _all_trial(world)
    assert body["total"] == 7


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
def test_next_after_pages_through_every_match_exactly_once(
    client: TestClient, world: SearchWorld, limit: int
) -> None:
    seen: list[int] = []
    after = None
    pages = 0
    while True:
        body = ok(search(client, world.trial, "viewer", "", limit=limit, after=after))
        assert body["total"] == 7
        assert len(body["results"]) <= limit
        seen += [r["id"] for r in body["results"]]
        pages += 1
        after = body["next_after"]
        if after is None:
            break
        assert after == body["results"][-1]["id"]
    assert seen == _all_trial(world)
    assert pages == -(-7 // limit)


def test_paging_a_filtered_query(client: TestClient, world: SearchWorld) -> None:
    query = "arm = 'A' OR age < 20"
    expected = world.pks("trial/T1", "trial/T2", "site_a/A2", "site_b/B1")
    first = ok(search(client, world.trial, "viewer", query, limit=3))
    assert [r["id"] for r in first["results"]] == expected[:3] and first["total"] == 4
    second = ok(search(client, world.trial, "viewer", query, limit=3, after=first["next_after"]))
    assert [r["id"] for r in second["results"]] == expected[3:] and second["total"] == 4
    assert second["next_after"] is None
    # `after` past the end: an empty page, the total unchanged.
    last = ok(search(client, world.trial, "viewer", query, after=expected[-1]))
    assert last == {"results": [], "total": 4, "next_after": None}


def test_total_counts_every_match_not_the_page(client: TestClient, world: SearchWorld) -> None:
    body = ok(search(client, world.trial, "viewer", "age > 18", limit=1))
    assert len(body["results"]) == 1 and body["total"] == 5
    assert ok(search(client, world.trial, "viewer", "age > 100"))["total"] == 0


def test_include_values_adds_each_patients_values_by_name(client: TestClient, world: SearchWorld) -> None:
    body = ok(
        search(
            client,
            world.trial,
            "viewer",
            "patient.patient_id IN ('T1', 'T2', 'T3', 'A1')",
            include_values=True,
        )
    )
    by_pid = {r["patient_id"]: r for r in body["results"]}
    assert by_pid["T1"]["values"] == {
        "age": 40,
        "weight": 70.5,
        "responder": True,
        "arm": "A",
        "note": "it's 50% done",
        "enrolled": "2024-01-15",
        "seen_at": "2024-01-15T08:30:00Z",
    }
    # A decimal written as 80 is still a decimal.
    t2 = by_pid["T2"]["values"]
    assert t2 == {"age": 17, "weight": 80.0, "responder": False, "arm": "B", "note": INJECTION_ID}
    assert isinstance(t2["weight"], float)
    assert by_pid["T3"]["values"] == {}
    # A subproject's own datapoint is named too.
    assert by_pid["A1"]["values"] == {"age": 65, "arm": "placebo", "site_code": "S001"}
    without = ok(search(client, world.trial, "viewer", "patient.patient_id = 'T1'"))
    assert without["results"][0]["values"] is None


def test_target_studies(client: TestClient, world: SearchWorld) -> None:
    body = ok(search(client, world.trial, "viewer", "study.modalities = 'MR'", target="studies"))
    assert [r["id"] for r in body["results"]] == sorted(
        world.studies[k] for k in ("T1 baseline", "T1 week 24", "A1 week 12")
    )
    assert body["total"] == 3
    first = body["results"][0]
    assert first["patient_id"] == world.pk("trial", "T1") and first["modalities"] == ["CT", "MR"]
    assert first["study_date"] == "2024-02-01" and first["visit"] == "Baseline" and first["values"] is None
    assert first["creator"]["username"] == "member"
    # Datapoint conditions are about the study's patient.
    body = ok(search(client, world.trial, "viewer", "age >= 50", target="studies", include_values=True))
    assert [r["id"] for r in body["results"]] == sorted(
        world.studies[k] for k in ("A1 week 12", "B1 baseline")
    )
    assert body["results"][0]["values"] == {"age": 65, "arm": "placebo", "site_code": "S001"}
    # Paging studies.
    page = ok(search(client, world.trial, "viewer", "", target="studies", limit=3))
    assert page["total"] == 4 and len(page["results"]) == 3
    rest = ok(search(client, world.trial, "viewer", "", target="studies", limit=3, after=page["next_after"]))
    assert [r["id"] for r in page["results"] + rest["results"]] == sorted(
        world.studies[k] for k in ("T1 baseline", "T1 week 24", "A1 week 12", "B1 baseline")
    )


def test_study_conditions_for_patients_mean_has_a_study(client: TestClient, world: SearchWorld) -> None:
    found = found_ids(
        search(client, world.trial, "viewer", "study.modalities = 'CT' AND study.study_date >= '2024-03-01'")
    )
    assert found == [world.pk("site_b", "B1")]
    found = found_ids(search(client, world.trial, "viewer", "NOT study.modalities = 'CT'"))
    assert found == world.pks("trial/T2", "trial/T3", "site_a/A1", "site_a/A2", f"site_b/{INJECTION_ID}")


# --- errors -------------------------------------------------------------------


# (query, position of the fault, part of the message)
QUERY_ERRORS = [
    ("age >=", 6, "expected a literal"),
    ("agee = 1", 0, "unknown field 'agee'; did you mean age?"),
    ("age >= 18 AND arm = 'C'", 20, "'C' is not one of the choices of arm"),
    ("enrolled > '2024-13-01'", 11, "not a real date"),
    ("arm < 'B'", 4, "'<' needs an ordered field"),
    ("age = 'x'", 6, ""),
    ("age = 1 arm = 'A'", 8, "expected AND, OR or the end of the query"),
    ("note = 'unterminated", 7, "unterminated string"),
    ("(age = 1", 8, ""),
    ("secret = 'x'", 0, "unknown field 'secret'"),
    ("age CONTAINS '1'", 4, "CONTAINS needs a text field"),
]


def test_errors_are_400_with_position_and_message(client: TestClient, world: SearchWorld) -> None:
    for query, position, message in QUERY_ERRORS:
        body = error(search(client, world.trial, "viewer", query), 400, "invalid_request")
        assert len(body["details"]) == 1, query
        detail = body["details"][0]
        assert set(detail) == {"position", "message"}
        assert detail["position"] == position, (query, detail)
        assert message in detail["message"], (query, detail)
        # The top-level message shows the query with a caret under the fault.
        assert body["message"].endswith(f"{query}\n{' ' * position}^"), query


def test_an_error_in_csv_mode_is_the_same_json_400(client: TestClient, world: SearchWorld) -> None:
    r = search(client, world.trial, "viewer", "agee = 1", headers={"Accept": "text/csv"})
    body = error(r, 400, "invalid_request")
    assert body["details"][0]["position"] == 0, body


def test_a_bad_body_is_400(client: TestClient, world: SearchWorld) -> None:
    for extra, field in [
        ({"target": "series"}, "target"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"after": -1}, "after"),
        ({"unknown": 1}, "unknown"),
    ]:
        body = error(search(client, world.trial, "viewer", **{"query": "", **extra}), 400, "invalid_request")
        assert field in {d["field"] for d in body["details"]}, body
    for query in [5, None, ["age = 1"], "age = 1 " * 2000]:
        error(search(client, world.trial, "viewer", query), 400, "invalid_request")


# --- injection-shaped input -----------------------------------------------------


def test_injection_shaped_literals_are_literals(client: TestClient, db: Session, world: SearchWorld) -> None:
    # The doubled quote is one quote inside the string: exactly the patient with that PatientID.
    r = search(client, world.trial, "viewer", "patient.patient_id = 'x'' OR 1=1 --'")
    assert found_ids(r) == [world.pk("site_b", INJECTION_ID)]
    assert found_ids(search(client, world.trial, "viewer", 'note = "x\' OR 1=1 --"')) == [
        world.pk("trial", "T2")
    ]
    for query in (
        "patient.patient_id = 'nobody'' OR ''1''=''1'",
        "patient.patient_id = 'x''; DROP TABLE patients; --'",
        "note CONTAINS ''' OR 1=1; --'",
        "patient.patient_name CONTAINS '%'",
        "note CONTAINS '_'",
        "arm IN ('A'') OR (''1''=''1')",
    ):
        r = search(client, world.trial, "viewer", query)
        assert r.status_code in (200, 400), r.text
        if r.status_code == 200:
            assert ok(r)["total"] == 0, query
    # % and _ are literal characters in CONTAINS.
    assert found_ids(search(client, world.trial, "viewer", "note CONTAINS '50%'")) == [
        world.pk("trial", "T1")
    ]
    assert db.scalar(select(func.count()).select_from(Patient)) == 9
    db.commit()


INJECTION_SHAPED_FIELDS = [
    "age; DROP TABLE patients = 1",
    'age" = 1',
    '"age" = 1',
    "`age` = 1",
    "patient.patient_id; -- = 'x'",
    "patient.\"patient_id\" = 'x'",
    "patients.id = 1",
    "study.id = 1 OR 1 = 1",
    "age = 1; DELETE FROM patients",
    "age = 1 -- comment",
    "age = 1 /* c */",
    "__class__ = 1",
    "patient.__dict__ = 'x'",
    "study.patient_id.__class__ = 1",
]


def test_injection_shaped_field_names_are_refused(
    client: TestClient, db: Session, world: SearchWorld
) -> None:
    for query in INJECTION_SHAPED_FIELDS:
        body = error(search(client, world.trial, "viewer", query), 400, "invalid_request")
        assert isinstance(body["details"][0]["position"], int), query
    assert db.scalar(select(func.count()).select_from(Patient)) == 9
    db.commit()  # end the test session's transaction (it would hold SQLite's write lock)
    assert ok(search(client, world.trial, "viewer", ""))["total"] == 7
