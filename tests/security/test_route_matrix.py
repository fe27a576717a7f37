"""Who may call which route: one table for the whole API, checked caller by caller over HTTP.

Every operation of the OpenAPI document, and every route outside it, has one
row: the request to send (against the world of tests/security/world.py, whose
target is the subproject `Cohort`) and the status each caller must get. A
route without a row fails `test_every_route_has_a_row`, so a new endpoint
cannot ship without deciding who may call it.

Besides the table, each answer is checked against rules that hold for every
route: anonymous and disabled callers get the Basic challenge; a caller who
cannot see the target gets exactly the 404 a missing target gets (ids aside),
never a 403 that would reveal it exists.

The world is built once for the module; every request's transaction is
rolled back, so a delete that answered 200 leaves the next caller the same
world (the statuses are decided before the commit; the domain tests cover
what a commit keeps).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from ipacs.db.engine import Database
from tests.security.world import (
    API,
    CALLERS,
    World,
    build_world,
    headers_of,
    module_app,
    roll_back_every_request,
    security_settings,
)

MISSING = 987654  # an id nothing has
DW = "/dicomweb"
DWP = "/dicomweb/projects/{project}"
STUDY = "/studies/{study_uid}"
SERIES = "/studies/{study_uid}/series/{series_uid}"
INSTANCE = "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
WADO_QUERY = (
    "?requestType=WADO&studyUID={study_uid}&seriesUID={series_uid}&objectUID={sop_uid}"
    "&contentType=application/dicom"
)
P = "/projects/{project}"
PAT = P + "/patients/{patient}"


@dataclass(frozen=True)
class Row:
    url: str  # filled in by World.fill; relative to /api/v1.0 unless it starts with "/dicomweb" or "!"
    statuses: tuple[int, ...]
    json: Any = None
    content: bytes | None = None
    content_type: str | None = None
    accept: str | None = None
    # False: the answer does not depend on seeing the target (lists filtered by permission, admin-only).
    about_target: bool = True

    def path(self) -> str:
        if self.url.startswith("!"):
            return self.url[1:]
        return self.url if self.url.startswith(DW) else API + self.url


# Answers of the same shape, named so the table reads as a table.
#           anon disabled none view user mgr parent sibling admin
PUBLIC = (200, 200, 200, 200, 200, 200, 200, 200, 200)
ANY = (401, 401, 200, 200, 200, 200, 200, 200, 200)
ADMIN = (401, 401, 403, 403, 403, 403, 403, 403, 200)
ADMIN_CREATES = (401, 401, 403, 403, 403, 403, 403, 403, 201)
READ = (401, 401, 404, 200, 200, 200, 200, 404, 200)
WRITE = (401, 401, 404, 403, 200, 200, 200, 404, 200)
WRITE_CREATES = (401, 401, 404, 403, 201, 201, 201, 404, 201)
MANAGE = (401, 401, 404, 403, 403, 200, 200, 404, 200)
MANAGE_CREATES = (401, 401, 404, 403, 403, 201, 201, 404, 201)

GARBAGE_DICOM = b"not a DICOM file"
MULTIPART = 'multipart/related; type="application/dicom"; boundary=xyz'
GARBAGE_MULTIPART = b"--xyz\r\nContent-Type: application/dicom\r\n\r\nnot DICOM\r\n--xyz--\r\n"
DICOM_JSON = "application/dicom+json"

# fmt: off
TABLE: dict[str, Row] = {
    # operations
    "GET /healthz": Row("!/healthz", PUBLIC, about_target=False),
    "GET /metrics": Row("!/metrics", PUBLIC, about_target=False),
    "GET /api/v1.0/openapi.json": Row("/openapi.json", PUBLIC, about_target=False),
    "GET /api/v1.0/docs": Row("/docs", PUBLIC, about_target=False),
    "GET /docs/oauth2-redirect": Row("!/docs/oauth2-redirect", PUBLIC, about_target=False),
    # sessions and users
    "POST /api/v1.0/logout": Row("/logout", ANY, about_target=False),
    "GET /api/v1.0/users/me": Row("/users/me", ANY, about_target=False),
    "GET /api/v1.0/users": Row("/users", ADMIN, about_target=False),
    "POST /api/v1.0/users": Row(
        "/users", ADMIN_CREATES, json={"username": "someone", "password": "long-enough-1"}, about_target=False
    ),
    "GET /api/v1.0/users/{username}": Row("/users/member", ADMIN, about_target=False),
    "PUT /api/v1.0/users/{username}": Row(
        "/users/member", ADMIN, json={"full_name": "M"}, about_target=False
    ),
    "DELETE /api/v1.0/users/{username}": Row("/users/member", ADMIN, about_target=False),
    # projects
    "GET /api/v1.0/projects": Row("/projects", ANY, about_target=False),
    "POST /api/v1.0/projects": Row(
        "/projects", MANAGE_CREATES, json={"name": "New", "parent_id": "{project}"}
    ),
    "GET /api/v1.0/projects/{project_id}": Row(P, READ),
    "PUT /api/v1.0/projects/{project_id}": Row(P, MANAGE, json={"description": "changed"}),
    "DELETE /api/v1.0/projects/{project_id}": Row(P + "?force=true", MANAGE),
    "GET /api/v1.0/projects/{project_id}/subprojects": Row(P + "/subprojects?recursive=true", READ),
    "GET /api/v1.0/projects/{project_id}/members": Row(P + "/members", MANAGE),
    "PUT /api/v1.0/projects/{project_id}/members/{username}": Row(
        P + "/members/newcomer", MANAGE, json={"role": "viewer"}
    ),
    "DELETE /api/v1.0/projects/{project_id}/members/{username}": Row(P + "/members/member", MANAGE),
    "GET /api/v1.0/projects/{project_id}/audit": Row(P + "/audit", MANAGE),
    # search
    "POST /api/v1.0/projects/{project_id}/search": Row(P + "/search", READ, json={"query": "age > 1"}),
    "GET /api/v1.0/projects/{project_id}/datapoints/search": Row(
        P + "/datapoints/search?name=age&op=gt&value=1", READ
    ),
    # datapoint definitions and the bulk import
    "GET /api/v1.0/projects/{project_id}/datapoints": Row(P + "/datapoints", READ),
    "POST /api/v1.0/projects/{project_id}/datapoints": Row(
        P + "/datapoints", MANAGE_CREATES, json={"name": "bmi", "type": "decimal"}
    ),
    "GET /api/v1.0/projects/{project_id}/datapoints/{datapoint_id}": Row(P + "/datapoints/{datapoint}", READ),
    "PUT /api/v1.0/projects/{project_id}/datapoints/{datapoint_id}": Row(
        P + "/datapoints/{datapoint}", MANAGE, json={"label": "Age"}
    ),
    "DELETE /api/v1.0/projects/{project_id}/datapoints/{datapoint_id}": Row(
        P + "/datapoints/{datapoint}?force=true", MANAGE
    ),
    "POST /api/v1.0/projects/{project_id}/datapoints/import": Row(
        P + "/datapoints/import", WRITE, json={"rows": [{"patient_id": "P-1", "values": {"age": 44}}]}
    ),
    # patients
    "GET /api/v1.0/projects/{project_id}/patients": Row(P + "/patients", READ),
    "POST /api/v1.0/projects/{project_id}/patients": Row(
        P + "/patients", WRITE_CREATES, json={"patient_id": "P-new"}
    ),
    "GET /api/v1.0/projects/{project_id}/patients/uuid/{patient_uuid}": Row(
        P + "/patients/uuid/{patient_uuid}", READ
    ),
    "PUT /api/v1.0/projects/{project_id}/patients/uuid/{patient_uuid}": Row(
        P + "/patients/uuid/{patient_uuid}", WRITE, json={"patient_name": "Doe^J"}
    ),
    "GET /api/v1.0/projects/{project_id}/patients/{patient_pk}": Row(PAT, READ),
    "PUT /api/v1.0/projects/{project_id}/patients/{patient_pk}": Row(PAT, WRITE, json={"sex": "O"}),
    "DELETE /api/v1.0/projects/{project_id}/patients/{patient_pk}": Row(PAT, MANAGE),
    "GET /api/v1.0/patients/{patient_uuid}": Row("/patients/{patient_uuid}", READ),
    "PUT /api/v1.0/patients/{patient_uuid}": Row("/patients/{patient_uuid}", WRITE, json={"sex": "F"}),
    # studies
    "GET /api/v1.0/projects/{project_id}/patients/{patient_pk}/studies": Row(PAT + "/studies", READ),
    "POST /api/v1.0/projects/{project_id}/patients/{patient_pk}/studies": Row(
        PAT + "/studies", WRITE_CREATES, json={"visit": "Week 12"}
    ),
    "GET /api/v1.0/projects/{project_id}/patients/{patient_pk}/studies/{study_pk}": Row(
        PAT + "/studies/{study}", READ
    ),
    "PUT /api/v1.0/projects/{project_id}/patients/{patient_pk}/studies/{study_pk}": Row(
        PAT + "/studies/{study}", WRITE, json={"visit": "Week 1"}
    ),
    "DELETE /api/v1.0/projects/{project_id}/patients/{patient_pk}/studies/{study_pk}": Row(
        PAT + "/studies/{study}", MANAGE
    ),
    # datapoint values
    "GET /api/v1.0/projects/{project_id}/patients/{patient_pk}/datapoints": Row(PAT + "/datapoints", READ),
    "POST /api/v1.0/projects/{project_id}/patients/{patient_pk}/datapoints": Row(
        PAT + "/datapoints", WRITE_CREATES, json={"datapoint_id": "{unset_datapoint}", "value": 70.5}
    ),
    "GET /api/v1.0/projects/{project_id}/patients/{patient_pk}/datapoints/{datapoint_id}": Row(
        PAT + "/datapoints/{datapoint}", READ
    ),
    "PUT /api/v1.0/projects/{project_id}/patients/{patient_pk}/datapoints/{datapoint_id}": Row(
        PAT + "/datapoints/{datapoint}", WRITE, json={"value": 43}
    ),
    "GET /api/v1.0/projects/{project_id}/patients/{patient_pk}/datapoints/{datapoint_id}/history": Row(
        PAT + "/datapoints/{datapoint}/history", READ
    ),
    # DICOM over the REST API
    "POST /api/v1.0/projects/{project_id}/dicom": Row(
        P + "/dicom", WRITE, content=GARBAGE_DICOM, content_type="application/dicom"
    ),
    "POST /api/v1.0/projects/{project_id}/dicom/checksums": Row(
        P + "/dicom/checksums", READ, json={"sha256": ["0" * 64]}
    ),
    "GET /api/v1.0/projects/{project_id}/patients/{patient_pk}/studies/{study_pk}/series": Row(
        PAT + "/studies/{study}/series", READ
    ),
    "GET /api/v1.0/projects/{project_id}/patients/{patient_pk}/studies/{study_pk}/archive": Row(
        PAT + "/studies/{study}/archive", READ
    ),
    # DICOMweb over every project the caller may read: lists are filtered, retrievals 404
    "GET /dicomweb/studies": Row(DW + "/studies", ANY, about_target=False),
    "POST /dicomweb/studies": Row(
        DW + "/studies", (401, 401, 400, 400, 400, 400, 400, 400, 400),
        content=GARBAGE_MULTIPART, content_type=MULTIPART, about_target=False,
    ),
    "GET /dicomweb/series": Row(DW + "/series", ANY, about_target=False),
    "GET /dicomweb/instances": Row(DW + "/instances", ANY, about_target=False),
    "GET /dicomweb/studies/{study}": Row(DW + STUDY, READ),
    "GET /dicomweb/studies/{study}/metadata": Row(DW + STUDY + "/metadata", READ),
    "GET /dicomweb/studies/{study}/series": Row(DW + STUDY + "/series", READ),
    "GET /dicomweb/studies/{study}/instances": Row(DW + STUDY + "/instances", READ),
    "GET /dicomweb/studies/{study}/series/{series}": Row(DW + SERIES, READ),
    "GET /dicomweb/studies/{study}/series/{series}/metadata": Row(DW + SERIES + "/metadata", READ),
    "GET /dicomweb/studies/{study}/series/{series}/instances": Row(DW + SERIES + "/instances", READ),
    "GET /dicomweb/studies/{study}/series/{series}/instances/{instance}": Row(DW + INSTANCE, READ),
    "GET /dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata": Row(
        DW + INSTANCE + "/metadata", READ
    ),
    "GET /dicomweb/wado": Row(DW + "/wado" + WADO_QUERY, READ),
    # DICOMweb rooted at one project
    "GET /dicomweb/projects/{project_id}/studies": Row(DWP + "/studies", READ),
    "POST /dicomweb/projects/{project_id}/studies": Row(
        DWP + "/studies", (401, 401, 404, 403, 409, 409, 409, 404, 409),
        content=GARBAGE_MULTIPART, content_type=MULTIPART, accept=DICOM_JSON,
    ),
    "GET /dicomweb/projects/{project_id}/series": Row(DWP + "/series", READ),
    "GET /dicomweb/projects/{project_id}/instances": Row(DWP + "/instances", READ),
    "GET /dicomweb/projects/{project_id}/studies/{study}": Row(DWP + STUDY, READ),
    "GET /dicomweb/projects/{project_id}/studies/{study}/metadata": Row(DWP + STUDY + "/metadata", READ),
    "GET /dicomweb/projects/{project_id}/studies/{study}/series": Row(DWP + STUDY + "/series", READ),
    "GET /dicomweb/projects/{project_id}/studies/{study}/instances": Row(DWP + STUDY + "/instances", READ),
    "GET /dicomweb/projects/{project_id}/studies/{study}/series/{series}": Row(DWP + SERIES, READ),
    "GET /dicomweb/projects/{project_id}/studies/{study}/series/{series}/metadata": Row(
        DWP + SERIES + "/metadata", READ
    ),
    "GET /dicomweb/projects/{project_id}/studies/{study}/series/{series}/instances": Row(
        DWP + SERIES + "/instances", READ
    ),
    "GET /dicomweb/projects/{project_id}/studies/{study}/series/{series}/instances/{instance}": Row(
        DWP + INSTANCE, READ
    ),
    "GET /dicomweb/projects/{project_id}/studies/{study}/series/{series}/instances/{instance}/metadata": Row(
        DWP + INSTANCE + "/metadata", READ
    ),
    "GET /dicomweb/projects/{project_id}/wado": Row(DWP + "/wado" + WADO_QUERY, READ),
}
# fmt: on

# Callers who cannot see the target: for them every row about it must be the 404 of a missing one.
UNSEEING = frozenset({"no_role", "sibling_manager"})
UNAUTHENTICATED = frozenset({"anonymous", "disabled"})


def all_routes(app: FastAPI) -> set[str]:
    """`METHOD path` of every route: the OpenAPI document's operations and the routes outside it."""
    found = {f"{method.upper()} {path}" for path, item in app.openapi()["paths"].items() for method in item}

    def walk(routes: list[Any], prefix: str) -> Iterator[str]:
        for route in routes:
            if hasattr(route, "original_router"):  # an included router
                yield from walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif not getattr(route, "include_in_schema", True):
                for method in sorted(set(route.methods or ()) - {"HEAD"}):
                    yield f"{method} {prefix}{route.path}"

    found.update(walk(app.router.routes, ""))
    return found


@pytest.fixture(scope="module")
def world_app(
    tmp_path_factory: pytest.TempPathFactory, database: Database, database_url: str
) -> Iterator[FastAPI]:
    # The disabled caller fails its login on every row: throttling (tests/auth) must not kick in here.
    settings = security_settings(
        tmp_path_factory.mktemp("matrix") / "data",
        database_url,
        login_max_failures=1_000_000,
        login_max_failures_per_address=1_000_000,
    )
    yield from module_app(settings, database)


@pytest.fixture(scope="module")
def world(world_app: FastAPI) -> World:
    with TestClient(world_app) as client, world_app.state.database.session(write=True) as db:
        built = build_world(client, db, world_app.state.settings)
    roll_back_every_request(world_app)
    return built


@pytest.fixture(scope="module")
def client(world_app: FastAPI, world: World) -> Iterator[TestClient]:
    with TestClient(world_app) as c:
        yield c


def _missing(world: World) -> World:
    return replace(
        world,
        target=MISSING,
        patient=MISSING + 1,
        patient_uuid="00000000-0000-4000-8000-000000987654",
        study=MISSING + 2,
        datapoint=MISSING + 3,
        unset_datapoint=MISSING + 4,
        study_uid="1.2.826.0.1.987654",
        series_uid="1.2.826.0.1.987655",
        sop_uid="1.2.826.0.1.987656",
    )


def _send(client: TestClient, key: str, world: World, caller: str) -> Response:
    client.cookies.clear()  # each caller speaks for itself, with no session of the one before
    row = TABLE[key]
    headers = headers_of(caller)
    if row.content_type:
        headers["Content-Type"] = row.content_type
    if row.accept:
        headers["Accept"] = row.accept
    body = None if row.json is None else _fill_json(row.json, world)
    method = key.split(" ")[0]
    return client.request(method, world.fill(row.path()), json=body, content=row.content, headers=headers)


def _fill_json(body: Any, world: World) -> Any:
    if isinstance(body, dict):
        return {k: _fill_json(v, world) for k, v in body.items()}
    if isinstance(body, list):
        return [_fill_json(v, world) for v in body]
    if isinstance(body, str) and body.startswith("{") and body.endswith("}"):
        return int(world.fill(body))
    return body


def _anonymised(text: str, world: World) -> str:
    values = (world.patient_uuid, world.study_uid, world.series_uid, world.sop_uid)
    for value in values:
        text = text.replace(value, "<uid>")
    return re.sub(r"\b\d+\b", "<id>", text)


def _problem(client: TestClient, key: str, world: World, caller: str, expected: int) -> str | None:
    """What is wrong with one caller's answer, if anything."""
    row = TABLE[key]
    r = _send(client, key, world, caller)
    if r.status_code != expected:
        return f"{caller}: expected {expected}, got {r.status_code} {r.text[:300]}"
    # STOW-RS answers its failures in DICOM JSON, as the standard says; everything else in invalidRequest.
    dicom_json = r.headers.get("content-type", "").startswith(DICOM_JSON)
    if r.status_code >= 400 and not dicom_json and r.json().get("success") is not False:
        return f"{caller}: an error without the invalidRequest body: {r.text[:300]}"
    if caller in UNAUTHENTICATED and expected == 401:
        if r.headers.get("www-authenticate") != 'Basic realm="iPACS"':
            return f"{caller}: 401 without the Basic challenge"
    elif row.about_target and caller in UNSEEING:
        absent = _send(client, key, _missing(world), caller)
        if absent.status_code != 404:
            return f"{caller}: a missing target answered {absent.status_code}, not 404"
        if _anonymised(r.text, world) != _anonymised(absent.text, _missing(world)):
            return f"{caller}: 404 differs from a missing target's: {r.text} vs {absent.text}"
    return None


def _rows() -> list[Any]:
    return [pytest.param(key, id=key) for key in TABLE]


@pytest.mark.parametrize("key", _rows())
def test_route_matrix(client: TestClient, world: World, key: str) -> None:
    problems = [
        problem
        for caller, expected in zip(CALLERS, TABLE[key].statuses, strict=True)
        if (problem := _problem(client, key, world, caller, expected))
    ]
    assert not problems, "\n".join(problems)


def test_every_route_has_a_row(world_app: FastAPI) -> None:
    """A new route fails here until the table says who may call it."""
    routes = all_routes(world_app)
    assert routes - TABLE.keys() == set(), "routes without a row in TABLE"
    assert TABLE.keys() - routes == set(), "rows for routes that do not exist"


def test_the_table_never_lets_an_unseeing_caller_learn_of_the_target() -> None:
    """A typo in the table must not quietly weaken the 404-before-403 guard."""
    for key, row in TABLE.items():
        by_caller = dict(zip(CALLERS, row.statuses, strict=True))
        if row.statuses == PUBLIC:
            continue
        assert by_caller["anonymous"] == by_caller["disabled"] == 401, key
        if row.about_target:
            assert all(by_caller[c] == 404 for c in UNSEEING), key


def test_filtered_lists_show_the_target_only_to_those_who_see_it(client: TestClient, world: World) -> None:
    seeing = {"viewer", "user", "manager", "parent_manager", "admin"}
    for caller in ("no_role", "sibling_manager", *sorted(seeing)):
        client.cookies.clear()
        projects = client.get(f"{API}/projects?limit=1000", headers=headers_of(caller)).json()
        studies = client.get(f"{DW}/studies", headers=headers_of(caller)).json()
        listed_project = world.target in {p["id"] for p in projects}
        listed_study = world.study_uid in {s["0020000D"]["Value"][0] for s in studies}
        assert listed_project == listed_study == (caller in seeing), caller


@pytest.mark.parametrize("route", ["/projects/{sibling}/patients/uuid/{uuid}", "/patients/{uuid}"])
def test_a_patient_uuid_never_tells_whether_it_exists(client: TestClient, world: World, route: str) -> None:
    """Through a project the caller reads, or directly: an unseen patient is a missing one."""
    answers = []
    for patient_uuid in (world.patient_uuid, _missing(world).patient_uuid):
        client.cookies.clear()
        url = API + route.format(sibling=world.sibling, uuid=patient_uuid)
        r = client.get(url, headers=headers_of("sibling_manager"))
        assert r.status_code == 404, r.text
        answers.append(r.json()["message"].replace(patient_uuid, "<uuid>"))
    assert answers[0] == answers[1]
