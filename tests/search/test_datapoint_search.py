"""GET /projects/{id}/datapoints/search?name=&op=&value=: every operator on the types it fits."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.search import repository
from tests.patients.world import MISSING, call, error, ok
from tests.search.world import INJECTION_ID, SearchWorld, make_search_world


@pytest.fixture
def world(client: TestClient, db: Session, settings: Settings) -> SearchWorld:
    return make_search_world(client, db, settings)


def _search(
    client: TestClient,
    project_id: int,
    name: str,
    op: str | None,
    value: str | None,
    who: str = "viewer",
    **extra: Any,
) -> Response:
    params: dict[str, Any] = {"name": name, **extra}
    if op is not None:
        params["op"] = op
    if value is not None:
        params["value"] = value
    return call(client, "GET", f"/projects/{project_id}/datapoints/search", who, params=params)


def _who(world: SearchWorld, response: Response) -> list[str]:
    """The matching patients as "project/PatientID", in the order returned."""
    keys = {p["id"]: f"{project}/{pid}" for (project, pid), p in world.patients.items()}
    return [keys[v["patient"]["id"]] for v in ok(response)]


B2 = f"site_b/{INJECTION_ID}"

# (name, op, value, the matching patients in value-id order, i.e. the order they were written)
CASES: list[tuple[str, str, str, list[str]]] = [
    # integer: age is T1 40, T2 17, A1 65, A2 30, B1 50, B2 22
    ("age", "eq", "40", ["trial/T1"]),
    ("age", "eq", "40.0", ["trial/T1"]),
    ("age", "ne", "40", ["trial/T2", "site_a/A1", "site_a/A2", "site_b/B1", B2]),
    ("age", "lt", "30", ["trial/T2", B2]),
    ("age", "le", "30", ["trial/T2", "site_a/A2", B2]),
    ("age", "gt", "50", ["site_a/A1"]),
    ("age", "ge", "50", ["site_a/A1", "site_b/B1"]),
    ("age", "ge", "-5", ["trial/T1", "trial/T2", "site_a/A1", "site_a/A2", "site_b/B1", B2]),
    # decimal: weight is T1 70.5, T2 80, B1 99.25
    ("weight", "eq", "70.5", ["trial/T1"]),
    ("weight", "eq", "80", ["trial/T2"]),
    ("weight", "ne", "80.0", ["trial/T1", "site_b/B1"]),
    ("weight", "lt", "80", ["trial/T1"]),
    ("weight", "le", "80", ["trial/T1", "trial/T2"]),
    ("weight", "gt", "75", ["trial/T2", "site_b/B1"]),
    ("weight", "ge", "99.25", ["site_b/B1"]),
    ("weight", "ge", "1e2", []),
    # boolean: responder is T1 true, T2 false, A2 true
    ("responder", "eq", "true", ["trial/T1", "site_a/A2"]),
    ("responder", "eq", "FALSE", ["trial/T2"]),
    ("responder", "ne", "true", ["trial/T2"]),
    # choice: arm is T1 A, T2 B, A1 placebo, A2 A, B1 A
    ("arm", "eq", "A", ["trial/T1", "site_a/A2", "site_b/B1"]),
    ("arm", "ne", "A", ["trial/T2", "site_a/A1"]),
    ("arm", "contains", "LACE", ["site_a/A1"]),
    ("arm", "contains", "", ["trial/T1", "trial/T2", "site_a/A1", "site_a/A2", "site_b/B1"]),
    # string: note is T1 "it's 50% done", T2 "x' OR 1=1 --", A2 'said "hi", left'
    ("note", "eq", "it's 50% done", ["trial/T1"]),
    ("note", "eq", "IT'S 50% DONE", []),
    ("note", "ne", "it's 50% done", ["trial/T2", "site_a/A2"]),
    ("note", "contains", "50%", ["trial/T1"]),
    ("note", "contains", "%", ["trial/T1"]),
    ("note", "contains", "_", []),
    ("note", "contains", "' or 1=1", ["trial/T2"]),
    ("note", "contains", 'SAID "HI"', ["site_a/A2"]),
    # date: enrolled is T1 2024-01-15
    ("enrolled", "eq", "2024-01-15", ["trial/T1"]),
    ("enrolled", "ne", "2024-01-15", []),
    ("enrolled", "lt", "2024-01-15", []),
    ("enrolled", "le", "2024-01-15", ["trial/T1"]),
    ("enrolled", "gt", "2024-01-14", ["trial/T1"]),
    ("enrolled", "ge", "2024-01-16", []),
    # datetime: seen_at is T1 2024-01-15T08:30:00Z; instants compare, whatever the offset
    ("seen_at", "eq", "2024-01-15T08:30:00Z", ["trial/T1"]),
    ("seen_at", "eq", "2024-01-15T10:30:00+02:00", ["trial/T1"]),
    ("seen_at", "ne", "2024-01-15T08:30:00Z", []),
    ("seen_at", "lt", "2024-01-15T08:30:00.000001Z", ["trial/T1"]),
    ("seen_at", "le", "2024-01-15T08:29:59Z", []),
    ("seen_at", "gt", "2024-01-15T08:29:59Z", ["trial/T1"]),
    ("seen_at", "ge", "2024-01-15T09:30:00+01:00", ["trial/T1"]),
    # a subproject's datapoint, searched from the parent
    ("site_code", "eq", "S001", ["site_a/A1"]),
    # names are case-insensitive
    ("AGE", "eq", "65", ["site_a/A1"]),
]


def test_each_operator_on_each_type(client: TestClient, world: SearchWorld) -> None:
    # One world for the whole table (it takes a while to build); every wrong row is reported.
    wrong = []
    for name, op, value, expected in CASES:
        r = _search(client, world.trial, name, op, value)
        got = _who(world, r)
        if got != expected or r.headers["X-Total-Count"] != str(len(expected)):
            wrong.append(
                f"{name} {op} {value!r}: {got}, total {r.headers['X-Total-Count']}; expected {expected}"
            )
    assert not wrong, "\n".join(wrong)


def test_a_match_is_the_value_with_its_patient(client: TestClient, world: SearchWorld) -> None:
    [match] = ok(_search(client, world.trial, "weight", "eq", "80"))
    t2 = world.patients[("trial", "T2")]
    assert match["patient"] == {
        "id": t2["id"],
        "uuid": t2["uuid"],
        "patient_id": "T2",
        "project_id": world.trial,
    }
    assert match["datapoint_id"] == world.datapoints["weight"] and match["datapoint_name"] == "weight"
    assert match["patient_id"] == t2["id"]
    assert match["value"] == 80.0 and isinstance(match["value"], float)
    assert match["version"] == 1 and match["id"] is not None and match["uuid"] is not None
    assert match["creator"]["username"] == match["updated_by"]["username"] == "member"
    # The value exactly as the patient's own value endpoint shows it (another read path).
    path = f"/projects/{world.trial}/patients/{t2['id']}/datapoints/{world.datapoints['weight']}"
    assert {k: v for k, v in match.items() if k != "patient"} == ok(call(client, "GET", path, "viewer"))
    [seen] = ok(_search(client, world.trial, "seen_at", "ge", "2024-01-01T00:00:00Z"))
    assert seen["value"] == "2024-01-15T08:30:00Z"


def test_op_defaults_to_eq(client: TestClient, world: SearchWorld) -> None:
    assert _who(world, _search(client, world.trial, "arm", None, "B")) == ["trial/T2"]


# An operator the type lacks.
WRONG_OPS = [
    ("age", "contains"),
    ("weight", "contains"),
    ("responder", "contains"),
    ("enrolled", "contains"),
    ("seen_at", "contains"),
    ("responder", "lt"),
    ("responder", "ge"),
    ("arm", "lt"),
    ("arm", "gt"),
    ("note", "le"),
    ("note", "ge"),
]
# A value that does not fit the type.
BAD_VALUES = [
    ("age", "forty"),
    ("age", "40.5"),
    ("age", ""),
    ("age", "1e400"),
    ("age", str(2**53 + 1)),
    ("age", "0x10"),
    ("weight", "heavy"),
    ("weight", "nan"),
    ("weight", "inf"),
    ("responder", "yes"),
    ("responder", "1"),
    ("arm", "Z"),
    ("arm", "a"),
    ("enrolled", "2024-02-30"),
    ("enrolled", "15/01/2024"),
    ("enrolled", "2024-01-15T00:00:00Z"),
    ("seen_at", "2024-01-15"),
    ("seen_at", "yesterday"),
    ("seen_at", "2024-01-15T25:00:00Z"),
    ("note", "x" * 1001),
]


def test_a_wrong_operator_or_value_for_the_type_is_400(client: TestClient, world: SearchWorld) -> None:
    wrong = []
    fits = {"responder": "true", "enrolled": "2024-01-15", "seen_at": "2024-01-15T08:30:00Z"}
    for name, op in WRONG_OPS:
        r = _search(client, world.trial, name, op, fits.get(name, "1"))
        body = r.json()
        if r.status_code != 400 or body["error"] != "invalid_request" or body["details"][0]["field"] != "op":
            wrong.append(f"{name} {op}: {r.status_code} {r.text}")
    for name, value in BAD_VALUES:
        r = _search(client, world.trial, name, "eq", value)
        body = r.json()
        if r.status_code != 400 or [d["field"] for d in body["details"]] != ["value"]:
            wrong.append(f"{name} eq {value[:20]!r}: {r.status_code} {r.text[:200]}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"op": "like", "value": "1"}, "op"),
        ({"op": "EQ", "value": "1"}, "op"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": 1, "after": 1}, "after"),
    ],
)
def test_bad_parameters_are_400(
    client: TestClient, world: SearchWorld, params: dict[str, Any], field: str
) -> None:
    r = call(
        client,
        "GET",
        f"/projects/{world.trial}/datapoints/search",
        "viewer",
        params={"name": "age", **params},
    )
    body = error(r, 400, "invalid_request")
    assert field in {d["field"] for d in body["details"]}


def test_a_missing_name_is_400(client: TestClient, world: SearchWorld) -> None:
    r = call(client, "GET", f"/projects/{world.trial}/datapoints/search", "viewer", params={"value": "1"})
    assert "name" in {d["field"] for d in error(r, 400, "invalid_request")["details"]}


def test_an_unknown_name_is_404(client: TestClient, world: SearchWorld) -> None:
    for name in ("agee", "patient.sex", "age; DROP TABLE patients", "secret"):
        error(_search(client, world.trial, name, "eq", "1"), 404, "not_found")
    # Site A's datapoint does not apply in its sibling Site B.
    error(_search(client, world.projects["site_b"], "site_code", "eq", "S001"), 404, "not_found")


@pytest.mark.parametrize("cap", [10**6, 0])
def test_scope_and_permissions(
    client: TestClient, world: SearchWorld, monkeypatch: pytest.MonkeyPatch, cap: int
) -> None:
    # With a high cap, the values of a small scope are read patient by patient.
    monkeypatch.setattr(repository, "DRIVER_CAP", cap)
    error(_search(client, world.trial, "age", "ge", "0", "outsider"), 404, "not_found")
    error(_search(client, world.trial, "age", "ge", "0", "site_viewer"), 404, "not_found")
    error(_search(client, MISSING, "age", "ge", "0", "viewer"), 404, "not_found")
    # A subproject viewer sees its own subproject's values of the inherited datapoint only.
    r = _search(client, world.projects["site_a"], "age", "ge", "0", "site_viewer")
    assert _who(world, r) == ["site_a/A1", "site_a/A2"]
    # The sibling project's datapoint of its own, from its own user.
    r = _search(client, world.projects["other"], "secret", "contains", "", "outsider")
    assert _who(world, r) == ["other/T1", "other/O2"]


@pytest.mark.parametrize("cap", [10**6, 0])
def test_paging_with_total_and_next_link(
    client: TestClient, world: SearchWorld, monkeypatch: pytest.MonkeyPatch, cap: int
) -> None:
    monkeypatch.setattr(repository, "DRIVER_CAP", cap)
    everyone = ["trial/T1", "trial/T2", "site_a/A1", "site_a/A2", "site_b/B1", B2]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 4}
    pages = 0
    while True:
        r = _search(client, world.trial, "age", "ge", "0", **params)
        assert r.headers["X-Total-Count"] == "6"
        page = _who(world, r)
        assert 0 < len(page) <= 4
        seen += page
        pages += 1
        link = r.headers.get("Link")
        if link is None:
            break
        url, rel = link.split(";")
        assert rel.strip() == 'rel="next"'
        query = parse_qs(urlsplit(url.strip("<> ")).query)
        assert query["name"] == ["age"] and query["op"] == ["ge"] and query["value"] == ["0"]
        assert query["after"] == [str(ok(r)[-1]["id"])]
        params = {"limit": 4, "after": int(query["after"][0])}
    assert seen == everyone and pages == 2
    # Offset paging too.
    r = _search(client, world.trial, "age", "ge", "0", limit=4, offset=4)
    assert _who(world, r) == everyone[4:] and "Link" not in r.headers
