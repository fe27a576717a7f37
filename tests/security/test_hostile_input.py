"""Limits and hostile input: every one answered with a clear 4xx and the invalidRequest body.

Never a 500, never a hang: oversized bodies and URLs, unknown fields, non-UTF-8
bodies, NUL characters (which PostgreSQL cannot store), huge integers,
NaN/Infinity (which Python's json module accepts), deeply nested JSON, page
sizes past the cap and StringQueries past their length, depth and IN-list caps.
The world (tests/security/world.py) is built once for the module; the caller is
`user`, who may write in the target project, so a refusal is never a matter of
permission.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from ipacs.app import create_app
from ipacs.db.engine import Database
from ipacs.query import MAX_CONDITIONS, MAX_DEPTH, MAX_IN_ITEMS, MAX_QUERY_LENGTH
from ipacs.schemas import MAX_BODY_DEPTH
from tests.factories import basic
from tests.security.world import API, World, build_world, module_app, security_settings

BODY_LIMIT = 64 * 1024
QUERY_LIMIT = 2048
JSON = {"Content-Type": "application/json"}
PAT_LIST = "/projects/{project}/patients"
PAT = PAT_LIST + "/{patient}"


@pytest.fixture(scope="module")
def hostile_app(
    tmp_path_factory: pytest.TempPathFactory, database: Database, database_url: str
) -> Iterator[FastAPI]:
    settings = security_settings(
        tmp_path_factory.mktemp("hostile") / "data",
        database_url,
        max_request_bytes=BODY_LIMIT,
        max_query_bytes=QUERY_LIMIT,
    )
    yield from module_app(settings, database)


@pytest.fixture(scope="module")
def world(hostile_app: FastAPI) -> World:
    with TestClient(hostile_app) as client, hostile_app.state.database.session(write=True) as db:
        return build_world(client, db, hostile_app.state.settings)


@pytest.fixture(scope="module")
def client(hostile_app: FastAPI, world: World) -> Iterator[TestClient]:
    with TestClient(hostile_app, raise_server_exceptions=False) as c:
        yield c


def send(client: TestClient, method: str, path: str, *, raw: bytes | None = None, **kwargs: Any) -> Response:
    client.cookies.clear()
    headers = {**basic("user"), **kwargs.pop("headers", {})}
    if raw is not None:
        kwargs["content"] = raw
        headers = {**JSON, **headers}
    return client.request(method, API + path, headers=headers, **kwargs)


def refused(response: Response, status: int = 400, field: str | None = None) -> dict[str, Any]:
    """An invalidRequest body with this status (and naming this field, when given)."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"success", "error", "message", "details"}, body
    assert body["success"] is False and body["message"], body
    if field is not None:
        assert field in {d.get("field") for d in body["details"]}, body
    return body


def message_of(body: dict[str, Any]) -> str:
    return " ".join([body["message"], *(d["message"] for d in body["details"])])


# -- sizes ----------------------------------------------------------------------------------------


def test_body_over_the_limit_is_413(client: TestClient, world: World) -> None:
    r = send(client, "POST", f"/projects/{world.target}/patients", raw=b" " * (BODY_LIMIT + 1))
    assert refused(r, 413)["error"] == "payload_too_large"


def test_a_stalled_body_is_408_not_a_hang(hostile_app: FastAPI, world: World) -> None:
    """A client that sends part of a JSON body and then nothing holds no worker for long."""
    settings = hostile_app.state.settings.model_copy(update={"body_idle_timeout": 0.2})
    app = create_app(settings, database=hostile_app.state.database)
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": b'{"patient_id": "SL', "more_body": True}]

    async def receive() -> dict[str, Any]:
        if chunks:
            return chunks.pop(0)
        await anyio.sleep(30)  # the rest never comes
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = f"{API}/projects/{world.target}/patients"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")]
        + [(k.lower().encode(), v.encode()) for k, v in basic("user").items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    started = time.monotonic()
    anyio.run(app, scope, receive, send)
    assert time.monotonic() - started < 10
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"stalled" in body and b'"success":false' in body


def test_query_string_over_the_limit_is_414(client: TestClient, world: World) -> None:
    r = send(client, "GET", f"/projects/{world.target}/patients", params={"search": "x" * QUERY_LIMIT})
    assert "query string" in refused(r, 414)["message"]


def test_page_size_is_capped_at_1000(client: TestClient, world: World) -> None:
    for path in (f"/projects/{world.target}/patients", "/projects", f"/projects/{world.target}/datapoints"):
        refused(send(client, "GET", path, params={"limit": 1001}), field="limit")
        assert send(client, "GET", path, params={"limit": 1000}).status_code == 200
    r = send(client, "POST", f"/projects/{world.target}/search", json={"query": "", "limit": 1001})
    refused(r, field="limit")


@pytest.mark.parametrize(
    ("field", "length"),
    [("patient_name", 201), ("patient_id", 65)],
)
def test_string_fields_have_length_limits(client: TestClient, world: World, field: str, length: int) -> None:
    body = {"patient_id": "LEN-1", field: "x" * length}
    refused(send(client, "POST", f"/projects/{world.target}/patients", json=body), field=field)


def test_a_string_value_is_capped(client: TestClient, world: World) -> None:
    # A manager defines it; `user` sets it.
    r = send(
        client,
        "POST",
        f"/projects/{world.target}/datapoints",
        json={"name": "note", "type": "string"},
        headers=basic("manager"),
    )
    assert r.status_code == 201, r.text
    path = f"/projects/{world.target}/patients/{world.patient}/datapoints/{r.json()['id']}"
    refused(send(client, "PUT", path, json={"value": "x" * 1001}), field="value")
    assert send(client, "PUT", path, json={"value": "x" * 1000}).status_code == 200


# -- unknown fields -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/projects/{project}/patients", {"patient_id": "U-1", "nickname": "x"}),
        ("PUT", "/projects/{project}/patients/{patient}", {"sex": "F", "nickname": "x"}),
        ("POST", "/projects/{project}/patients/{patient}/studies", {"visit": "V1", "nickname": "x"}),
        ("PUT", "/projects/{project}/patients/{patient}/datapoints/{datapoint}", {"value": 1, "nickname": 1}),
        ("POST", "/projects/{project}/search", {"query": "", "nickname": "x"}),
        ("POST", "/projects/{project}/datapoints/import", {"rows": [], "nickname": "x"}),
        (
            "POST",
            "/projects/{project}/datapoints/import",
            {"rows": [{"patient_id": "P-1", "values": {}, "nickname": "x"}]},
        ),
    ],
)
def test_unknown_fields_are_refused_by_name(
    client: TestClient, world: World, method: str, path: str, body: dict[str, Any]
) -> None:
    r = send(client, method, world.fill(path), json=body)
    got = refused(r)
    named = {d["field"] for d in got["details"]}
    assert any(f.endswith("nickname") for f in named), got
    assert all(d["message"] == "unknown field" for d in got["details"] if d["field"].endswith("nickname"))


# -- malformed bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"patient_id": "\xff\xfe"}', "not UTF-8"),
        ('{"patient_id": "é"}'.encode("latin-1"), "not UTF-8"),
        (b"[" * 30_000 + b"]" * 30_000, "nests too deeply"),
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "nests too deeply"),
        (b'{"patient_id": ' + b"9" * 5000 + b"}", "cannot be read"),
        (b'{"patient_id": ', "invalid JSON"),
    ],
    ids=["invalid-utf8", "latin1", "deep-array", "deep-object", "5000-digit-int", "truncated"],
)
def test_unreadable_bodies_are_400_with_the_reason(
    client: TestClient, world: World, raw: bytes, reason: str
) -> None:
    r = send(client, "POST", f"/projects/{world.target}/patients", raw=raw)
    body = refused(r, field="body")
    assert reason in message_of(body)


def test_nesting_the_parser_accepts_is_still_capped(client: TestClient, world: World) -> None:
    """A value 33 levels deep parses, and is refused before anything walks it."""
    nested: Any = 1
    for _ in range(MAX_BODY_DEPTH + 1):
        nested = [nested]
    path = f"/projects/{world.target}/patients/{world.patient}/datapoints/{world.datapoint}"
    body = refused(send(client, "PUT", path, json={"value": nested}), field="value")
    assert "nested deeper" in message_of(body)


# -- NUL characters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        (
            "POST",
            "/projects/{project}/patients",
            {"patient_id": "N-1", "patient_name": "a\x00b"},
            "patient_name",
        ),
        ("POST", "/projects/{project}/patients/{patient}/studies", {"description": "a\x00"}, "description"),
        (
            "PUT",
            "/projects/{project}/patients/{patient}/datapoints/{datapoint}",
            {"value": "4\x002"},
            "value",
        ),
        ("POST", "/projects/{project}/search", {"query": "patient.patient_id = 'a\x00'"}, "query"),
        (
            "POST",
            "/projects/{project}/datapoints/import",
            {"rows": [{"patient_id": "P-1", "values": {"age\x00": 1}}]},
            "rows",
        ),
    ],
)
def test_nul_in_a_body_is_400_naming_the_field(
    client: TestClient, world: World, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    got = refused(send(client, method, world.fill(path), json=body), field=field)
    assert "NUL" in message_of(got)


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/projects/{project}/patients", {"search": "a\x00b"}, "search"),
        ("/projects/{project}/patients", {"patient_id": "\x00"}, "patient_id"),
        ("/projects/{project}/datapoints/search", {"name": "age", "value": "\x00"}, "value"),
    ],
)
def test_nul_in_a_query_parameter_is_400_naming_it(
    client: TestClient, world: World, path: str, params: dict[str, str], field: str
) -> None:
    refused(send(client, "GET", world.fill(path), params=params), field=field)


def test_nul_in_the_path_names_nothing(client: TestClient, world: World) -> None:
    r = send(client, "GET", "/users/a%00b", headers=basic("admin"))
    assert refused(r, 404)["error"] == "not_found"


# -- numbers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_nan_and_infinity_are_400(client: TestClient, world: World, literal: bytes) -> None:
    """Python's json reads these; no value, limit or bound may keep them."""
    value_path = f"/projects/{world.target}/patients/{world.patient}/datapoints/{world.unset_datapoint}"
    refused(send(client, "PUT", value_path, raw=b'{"value": ' + literal + b"}"), field="value")
    search = f"/projects/{world.target}/search"
    refused(send(client, "POST", search, raw=b'{"query": "", "limit": ' + literal + b"}"), field="limit")
    imported = b'{"rows": [{"patient_id": "P-1", "values": {"weight": ' + literal + b"}}]}"
    refused(send(client, "POST", f"/projects/{world.target}/datapoints/import", raw=imported))
    definition = b'{"name": "x", "type": "decimal", "minimum": ' + literal + b"}"
    r = send(client, "POST", f"/projects/{world.target}/datapoints", raw=definition, headers=basic("manager"))
    refused(r, field="minimum")


def test_huge_integers_are_400(client: TestClient, world: World) -> None:
    value_path = f"/projects/{world.target}/patients/{world.patient}/datapoints/{world.datapoint}"
    body = refused(send(client, "PUT", value_path, raw=b'{"value": ' + b"9" * 400 + b"}"), field="value")
    assert "limited to" in message_of(body)
    refused(send(client, "GET", "/projects/" + "9" * 40))
    refused(send(client, "GET", f"/projects/{world.target}/patients", params={"offset": "9" * 30}))
    r = send(client, "PUT", f"/projects/{world.target}/patients/{world.patient}", json={"project_id": 10**30})
    assert r.status_code in (400, 404), r.text
    assert r.json()["success"] is False


# -- StringQuery caps -----------------------------------------------------------------------------


def _search(client: TestClient, world: World, query: str) -> Response:
    return send(client, "POST", f"/projects/{world.target}/search", json={"query": query})


def test_a_10000_element_in_list_is_400(client: TestClient, world: World) -> None:
    query = "age IN (" + ", ".join(str(i) for i in range(10_000)) + ")"
    assert len(query) > MAX_QUERY_LENGTH
    body = refused(_search(client, world, query), field="query")
    assert str(MAX_QUERY_LENGTH) in message_of(body)


def test_an_in_list_past_its_cap_is_400_at_its_position(client: TestClient, world: World) -> None:
    query = "age IN (" + ",".join(["1"] * (MAX_IN_ITEMS + 1)) + ")"
    assert len(query) <= MAX_QUERY_LENGTH
    body = refused(_search(client, world, query))
    assert f"at most {MAX_IN_ITEMS} items" in body["message"]
    assert body["details"][0]["position"] > 0


def test_nesting_past_the_cap_is_400(client: TestClient, world: World) -> None:
    for query in ("(" * (MAX_DEPTH + 1) + "age = 1" + ")" * (MAX_DEPTH + 1), "NOT " * 2000 + "age = 1"):
        body = refused(_search(client, world, query))
        assert "nests more than" in body["message"]


def test_the_most_conditions_allowed_are_answered_and_one_more_is_400(
    client: TestClient, world: World
) -> None:
    """ORs on one datapoint compile to one chain SQLite must still nest (496 of them answered 500)."""
    query = " OR ".join(["age = 1"] * MAX_CONDITIONS)
    assert len(query) < MAX_QUERY_LENGTH
    r = _search(client, world, query)
    assert r.status_code == 200, r.text[:300]
    body = refused(_search(client, world, query + " OR age = 2"))
    assert f"at most {MAX_CONDITIONS} conditions" in body["message"]
    assert body["details"][0]["position"] == len(query) + 4
