"""Every error path answers the contract's `invalidRequest` body with the right status."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session

from ipacs.app import create_app
from ipacs.config import Settings
from ipacs.db.engine import Database
from tests.factories import basic, make_user

USERS = "/api/v1.0/users"
SMALL_LIMIT = 1024


def assert_error(r: Response, status: int, code: str) -> dict[str, Any]:
    """The response is `{success: false, error, message, details}` with this status and code."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"success", "error", "message", "details"}
    assert body["success"] is False
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], list)
    for detail in body["details"]:
        assert isinstance(detail, dict) and isinstance(detail["message"], str)
    return body


def fields_named(body: dict[str, Any]) -> set[str]:
    return {d["field"] for d in body["details"]}


@pytest.fixture
def admin(client: TestClient, db: Session, settings: Settings) -> dict[str, str]:
    make_user(db, settings, "root", is_admin=True)
    make_user(db, settings, "alice")
    db.commit()
    return basic("root")


# -- request validation: 400, never 422 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"username": "bad name!", "password": "long-enough-1"}, "username", "pattern"),
        ({"username": "bob"}, "password", "Field required"),
        ({"password": "long-enough-1"}, "username", "Field required"),
        ({"username": "bob", "password": "short"}, "password", "at least 8"),
        ({"username": "bob", "password": "long-enough-1", "nickname": "b"}, "nickname", "unknown field"),
        ({"username": "bob", "password": "long-enough-1", "is_admin": "maybe"}, "is_admin", "boolean"),
    ],
)
def test_body_validation_is_400_naming_the_field(
    client: TestClient, admin: dict[str, str], body: dict[str, Any], field: str, message: str
) -> None:
    r = client.post(USERS, json=body, headers=admin)
    got = assert_error(r, 400, "invalid_request")
    assert fields_named(got) == {field}
    assert message in got["details"][0]["message"]
    assert field in got["message"]


def test_every_invalid_field_is_reported(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post(USERS, json={"username": "", "password": "x", "extra": 1}, headers=admin)
    got = assert_error(r, 400, "invalid_request")
    assert fields_named(got) == {"username", "password", "extra"}


def test_malformed_json_names_the_position(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post(USERS, content=b'{"username": ', headers={**admin, "Content-Type": "application/json"})
    got = assert_error(r, 400, "invalid_request")
    assert got["details"] == [{"field": "body", "message": "invalid JSON at position 13: Expecting value"}]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_body_not_sent_as_json_says_so(
    client: TestClient, admin: dict[str, str], content_type: str | None
) -> None:
    headers = dict(admin)
    if content_type:
        headers["Content-Type"] = content_type
    r = client.post(USERS, content=b'{"username": "bob", "password": "long-enough-1"}', headers=headers)
    got = assert_error(r, 400, "invalid_request")
    assert fields_named(got) == {"body"}
    assert "Content-Type: application/json" in got["details"][0]["message"]


def test_body_of_the_wrong_json_type(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post(USERS, json=["bob"], headers=admin)
    assert fields_named(assert_error(r, 400, "invalid_request")) == {"body"}


def test_missing_body(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post(USERS, headers=admin)
    assert fields_named(assert_error(r, 400, "invalid_request")) == {"body"}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("after=x", "after"),
    ],
)
def test_query_parameter_validation_is_400(
    client: TestClient, admin: dict[str, str], query: str, field: str
) -> None:
    r = client.get(f"{USERS}?{query}", headers=admin)
    assert fields_named(assert_error(r, 400, "invalid_request")) == {field}


def test_offset_and_after_together_are_refused(client: TestClient, admin: dict[str, str]) -> None:
    r = client.get(f"{USERS}?offset=1&after=1", headers=admin)
    assert fields_named(assert_error(r, 400, "invalid_request")) == {"after"}


def test_limit_at_the_bounds_is_accepted(client: TestClient, admin: dict[str, str]) -> None:
    for limit in (1, 1000):
        assert client.get(f"{USERS}?limit={limit}", headers=admin).status_code == 200


# -- routing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1.0/no-such-thing", "/nothing/here", "/api/v2.0/users"])
def test_unknown_route_is_404_json(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert_error(r, 404, "not_found")
    assert "set-cookie" not in r.headers


def test_unknown_user_is_404(client: TestClient, admin: dict[str, str]) -> None:
    body = assert_error(client.get(f"{USERS}/nobody", headers=admin), 404, "not_found")
    assert "nobody" in body["message"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", f"{USERS}/alice", "DELETE, GET, PUT"),
        ("POST", f"{USERS}/alice", "DELETE, GET, PUT"),
        ("DELETE", USERS, "GET, POST"),
        ("GET", "/api/v1.0/logout", "POST"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_wrong_method_is_405_json_with_allow(client: TestClient, method: str, path: str, allow: str) -> None:
    r = client.request(method, path)
    assert_error(r, 405, "invalid_request")
    assert r.headers["allow"] == allow


# -- body size -------------------------------------------------------------------------------------


@pytest.fixture
def small_app(app: FastAPI, settings: Settings, database: Database) -> FastAPI:
    """The app with a 1 KiB body limit (the `app` fixture still empties the tables after)."""
    return create_app(settings.model_copy(update={"max_request_bytes": SMALL_LIMIT}), database=database)


def test_body_over_the_limit_by_content_length_is_413(small_app: FastAPI) -> None:
    with TestClient(small_app) as client:
        r = client.post(USERS, content=b"x" * (SMALL_LIMIT + 1), headers={"Content-Type": "application/json"})
        assert_error(r, 413, "payload_too_large")
        # At the limit the body is read and judged on its content instead.
        r = client.post(USERS, content=b" " * SMALL_LIMIT, headers={"Content-Type": "application/json"})
        assert r.status_code != 413


def test_chunked_body_over_the_limit_is_413(small_app: FastAPI) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b"x" * 512

    with TestClient(small_app) as client:
        r = client.post(USERS, content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert_error(r, 413, "payload_too_large")


def test_streamed_body_is_cut_off_once_over_the_limit(small_app: FastAPI) -> None:
    """Raw ASGI, one message per chunk: the app stops reading at the chunk that crosses the limit."""
    chunk = b"x" * 400
    pending: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": True} for _ in range(10)
    ] + [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": USERS,
        "raw_path": USERS.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    anyio.run(small_app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    # 400 + 400 + 400 bytes crosses 1024 on the third chunk; the other 8 messages were never read.
    assert len(pending) == 8
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b'"error":"payload_too_large"' in body


# -- authentication and permissions ---------------------------------------------------------------


def test_no_credentials_is_401(client: TestClient) -> None:
    r = client.get(USERS)
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == 'Basic realm="iPACS"'


def test_not_an_admin_is_403(client: TestClient, admin: dict[str, str]) -> None:
    assert_error(client.get(USERS, headers=basic("alice")), 403, "forbidden")


def test_duplicate_user_is_409(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post(USERS, json={"username": "alice", "password": "long-enough-1"}, headers=admin)
    body = assert_error(r, 409, "conflict")
    assert "alice" in body["message"]


def test_stale_if_match_is_412(client: TestClient, admin: dict[str, str]) -> None:
    etag = client.get(f"{USERS}/alice", headers=admin).headers["etag"]
    assert client.put(f"{USERS}/alice", json={"full_name": "A"}, headers=admin).status_code == 200
    r = client.put(f"{USERS}/alice", json={"full_name": "B"}, headers={**admin, "If-Match": etag})
    assert_error(r, 412, "precondition_failed")


def test_throttled_login_is_429(client: TestClient, settings: Settings) -> None:
    for _ in range(settings.login_max_failures):
        client.get(USERS, headers=basic("mallory", "wrong-password"))
    r = client.get(USERS, headers=basic("mallory", "wrong-password"))
    assert_error(r, 429, "too_many_requests")
    assert int(r.headers["retry-after"]) >= 1


# -- unexpected exceptions -------------------------------------------------------------------------


def test_unexpected_exception_is_500_json_with_a_logged_error_id(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/api/v1.0/test-boom")
    def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    with (
        TestClient(app, raise_server_exceptions=False) as client,
        caplog.at_level(logging.ERROR, logger="ipacs.errors"),
    ):
        r = client.get("/api/v1.0/test-boom")
    body = assert_error(r, 500, "internal_error")
    match = re.search(r"error id ([0-9a-f]{12})", body["message"])
    assert match, body["message"]
    error_id = match.group(1)
    for leak in ("Traceback", "RuntimeError", "hunter2", "secret internals", 'File "'):
        assert leak not in r.text
    logged = [rec for rec in caplog.records if error_id in rec.getMessage()]
    assert len(logged) == 1
    assert logged[0].levelno == logging.ERROR
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is RuntimeError
    assert "/api/v1.0/test-boom" in logged[0].getMessage()


def test_each_unexpected_error_gets_its_own_id(app: FastAPI) -> None:
    @app.get("/api/v1.0/test-boom")
    def boom() -> None:
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as client:
        messages = {client.get("/api/v1.0/test-boom").json()["message"] for _ in range(3)}
    assert len(messages) == 3
