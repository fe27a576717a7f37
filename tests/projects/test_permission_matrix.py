"""Who may call which Projects endpoint: one table, checked row by row through HTTP.

The tree (built afresh for every row):

    Trial                      <- target "top"       Other (a top-level sibling)
      Site
        Cohort                 <- target "deep" (depth 3)
          Arm                  (a child of the deep target)
        Cohort B               (a sibling of the deep target)

Callers are described relative to the target. `viewer` and `user` hold their
role on Trial, so on the deep target it is inherited. The top-level target has
no parent, so the `parent_manager` caller does not apply to it; the
`child_manager` (a manager one level below the target) shows that a role
never reaches upwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from ipacs.api.deps import get_db
from ipacs.config import Settings
from ipacs.datapoints.schemas import DatapointCreate
from ipacs.datapoints.service import create_definition
from ipacs.db.engine import Database
from ipacs.models import Project
from tests.factories import as_caller, basic, grant, make_project, make_user

API = "/api/v1.0"
MISSING = 987654  # an id no project or datapoint has

CALLERS = (
    "anonymous",
    "no_role",
    "viewer",
    "user",
    "manager",
    "parent_manager",
    "sibling_manager",
    "child_manager",
    "admin",
)
# Who can see the target at all; everyone else must get 404 (anonymous: 401).
SEES_TARGET = frozenset({"viewer", "user", "manager", "parent_manager", "admin"})


@dataclass
class Tree:
    target: Project
    datapoint_id: int


@dataclass(frozen=True)
class Endpoint:
    method: str
    url: str  # {project} and {datapoint} are filled in
    body: dict[str, Any] | None = None
    about_target: bool = True  # False: the answer does not depend on seeing the target

    def request(self, client: TestClient, headers: dict[str, str], project: int, datapoint: int) -> Any:
        url = API + self.url.format(project=project, datapoint=datapoint)
        body = None if self.body is None else _fill(self.body, project)
        return client.request(self.method, url, json=body, headers=headers)


def _fill(body: dict[str, Any], project: int) -> dict[str, Any]:
    return {k: (project if v == "{project}" else v) for k, v in body.items()}


ENDPOINTS: dict[str, Endpoint] = {
    "list projects": Endpoint("GET", "/projects", about_target=False),
    "create subproject": Endpoint("POST", "/projects", {"name": "New", "parent_id": "{project}"}),
    "read project": Endpoint("GET", "/projects/{project}"),
    "update project": Endpoint("PUT", "/projects/{project}", {"description": "changed"}),
    "delete project": Endpoint("DELETE", "/projects/{project}?force=true"),
    "list subprojects": Endpoint("GET", "/projects/{project}/subprojects?recursive=true"),
    "list members": Endpoint("GET", "/projects/{project}/members"),
    "grant member": Endpoint("PUT", "/projects/{project}/members/newcomer", {"role": "viewer"}),
    "revoke member": Endpoint("DELETE", "/projects/{project}/members/member"),
    "list datapoints": Endpoint("GET", "/projects/{project}/datapoints"),
    "read datapoint": Endpoint("GET", "/projects/{project}/datapoints/{datapoint}"),
    "create datapoint": Endpoint("POST", "/projects/{project}/datapoints", {"name": "bmi", "type": "string"}),
    "update datapoint": Endpoint("PUT", "/projects/{project}/datapoints/{datapoint}", {"label": "Age"}),
    "delete datapoint": Endpoint("DELETE", "/projects/{project}/datapoints/{datapoint}"),
    "read audit log": Endpoint("GET", "/projects/{project}/audit"),
}

# fmt: off
#                       anon  none  view  user  mgr  parent sibl  child admin
MATRIX: dict[str, tuple[int, ...]] = {
    "list projects":     (401, 200,  200,  200,  200,  200,  200,  200,  200),
    "create subproject": (401, 404,  403,  403,  201,  201,  404,  404,  201),
    "read project":      (401, 404,  200,  200,  200,  200,  404,  404,  200),
    "update project":    (401, 404,  403,  403,  200,  200,  404,  404,  200),
    "delete project":    (401, 404,  403,  403,  200,  200,  404,  404,  200),
    "list subprojects":  (401, 404,  200,  200,  200,  200,  404,  404,  200),
    "list members":      (401, 404,  403,  403,  200,  200,  404,  404,  200),
    "grant member":      (401, 404,  403,  403,  200,  200,  404,  404,  200),
    "revoke member":     (401, 404,  403,  403,  200,  200,  404,  404,  200),
    "list datapoints":   (401, 404,  200,  200,  200,  200,  404,  404,  200),
    "read datapoint":    (401, 404,  200,  200,  200,  200,  404,  404,  200),
    "create datapoint":  (401, 404,  403,  403,  201,  201,  404,  404,  201),
    "update datapoint":  (401, 404,  403,  403,  200,  200,  404,  404,  200),
    "delete datapoint":  (401, 404,  403,  403,  200,  200,  404,  404,  200),
    "read audit log":    (401, 404,  403,  403,  200,  200,  404,  404,  200),
}
# fmt: on


def _rows() -> list[Any]:
    return [
        pytest.param(endpoint, target, id=f"{endpoint}-{target}")
        for endpoint in MATRIX
        for target in ("top", "deep")
    ]


def _build(db: Session, settings: Settings, target_name: str) -> Tree:
    users = {
        name: make_user(db, settings, name, is_admin=(name == "admin"))
        for name in (*CALLERS[1:], "member", "newcomer")
    }
    root = users["admin"]
    trial = make_project(db, root, "Trial")
    other = make_project(db, root, "Other")
    site = make_project(db, root, "Site", parent=trial)
    cohort = make_project(db, root, "Cohort", parent=site)
    arm = make_project(db, root, "Arm", parent=cohort)
    cohort_b = make_project(db, root, "Cohort B", parent=site)
    target, parent, sibling, child = (
        (trial, None, other, site) if target_name == "top" else (cohort, site, cohort_b, arm)
    )
    grant(db, trial, users["viewer"], "viewer")
    grant(db, trial, users["user"], "user")
    grant(db, target, users["manager"], "manager")
    if parent is not None:
        grant(db, parent, users["parent_manager"], "manager")
    grant(db, sibling, users["sibling_manager"], "manager")
    grant(db, child, users["child_manager"], "manager")
    grant(db, target, users["member"], "viewer")
    datapoint = create_definition(db, as_caller(root), target.id, DatapointCreate(name="age", type="integer"))
    db.commit()
    return Tree(target=target, datapoint_id=datapoint.id)


def _headers(caller: str) -> dict[str, str]:
    return {} if caller == "anonymous" else basic(caller)


def _without_ids(body: Any, *ids: int) -> Any:
    text = str(body)
    for i in ids:
        text = re.sub(rf"\b{i}\b", "<id>", text)
    return text


@pytest.fixture
def rolled_back(app: FastAPI) -> Iterator[None]:
    """Every request's transaction is rolled back instead of committed, so each
    caller of a row meets the same tree, built once (the statuses are decided
    before the commit; the other tests cover what a commit keeps)."""

    def session_rolled_back(request: Request) -> Iterator[Session]:
        database: Database = request.app.state.database
        with database.session(write=request.method != "GET") as session:
            yield session
            session.rollback()

    app.dependency_overrides[get_db] = session_rolled_back
    yield
    app.dependency_overrides.clear()


def _check(client: TestClient, spec: Endpoint, tree: Tree, caller: str, expected: int) -> str | None:
    """What is wrong with one caller's answer, if anything."""
    client.cookies.clear()  # each caller speaks for itself, with no session of the one before
    r = spec.request(client, _headers(caller), tree.target.id, tree.datapoint_id)
    if r.status_code != expected:
        return f"{caller}: expected {expected}, got {r.status_code} {r.text[:200]}"
    # The guard, independent of the table: an unseen project is indistinguishable
    # from one that does not exist.
    if caller == "anonymous":
        if r.status_code != 401 or r.headers.get("www-authenticate") != 'Basic realm="iPACS"':
            return f"{caller}: expected a Basic challenge, got {r.status_code}"
    elif spec.about_target and caller not in SEES_TARGET:
        absent = spec.request(client, _headers(caller), MISSING, tree.datapoint_id)
        if r.status_code != 404 or absent.status_code != 404:
            return f"{caller}: cannot see the project but got {r.status_code}"
        if _without_ids(r.json(), tree.target.id) != _without_ids(absent.json(), MISSING):
            return f"{caller}: 404 differs from a missing project's: {r.text} vs {absent.text}"
    if spec.url == "/projects" and spec.method == "GET" and caller != "anonymous":
        listed = {p["id"] for p in r.json()}
        if (tree.target.id in listed) != (caller in SEES_TARGET):
            return f"{caller}: target listed={tree.target.id in listed}"
    return None


@pytest.mark.usefixtures("rolled_back")
@pytest.mark.parametrize(("endpoint", "target"), _rows())
def test_permission_matrix(
    client: TestClient, db: Session, settings: Settings, endpoint: str, target: str
) -> None:
    tree = _build(db, settings, target)
    spec = ENDPOINTS[endpoint]
    problems = []
    for caller, expected in zip(CALLERS, MATRIX[endpoint], strict=True):
        if target == "top" and caller == "parent_manager":
            continue  # a top-level project has no parent
        problem = _check(client, spec, tree, caller, expected)
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems)


def test_rolled_back_requests_leave_the_tree_alone(
    client: TestClient, db: Session, settings: Settings, rolled_back: None
) -> None:
    """The matrix's rollback really isolates callers: a delete that answered 200 changed nothing."""
    tree = _build(db, settings, "deep")
    url = f"{API}/projects/{tree.target.id}"
    assert client.delete(f"{url}?force=true", headers=basic("admin")).status_code == 200
    assert client.get(url, headers=basic("admin")).status_code == 200


@pytest.mark.parametrize(
    ("caller", "expected"),
    [("anonymous", 401), ("no_role", 403), ("manager", 403), ("child_manager", 403), ("admin", 201)],
)
def test_only_admins_create_top_level_projects(
    client: TestClient, db: Session, settings: Settings, caller: str, expected: int
) -> None:
    _build(db, settings, "top")
    r = client.post(f"{API}/projects", json={"name": "Brand new"}, headers=_headers(caller))
    assert r.status_code == expected, r.text


def test_the_table_itself_never_answers_200_or_403_to_a_caller_who_cannot_see() -> None:
    """A typo in the table must not quietly weaken the guard above."""
    for endpoint, statuses in MATRIX.items():
        row = dict(zip(CALLERS, statuses, strict=True))
        assert row["anonymous"] == 401
        if not ENDPOINTS[endpoint].about_target:
            continue
        for caller, status in row.items():
            if caller != "anonymous" and caller not in SEES_TARGET:
                assert status == 404, (endpoint, caller)
