"""CSRF refusal for cross-site writes, security headers on every response, cookie flags."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from ipacs.api.middleware import SESSION_COOKIE
from ipacs.app import create_app
from ipacs.config import Settings
from ipacs.db.engine import Database
from tests.factories import basic, make_user

API = "/api/v1.0"
OWN = "http://testserver"
FOREIGN = "https://evil.example"


@pytest.fixture
def admin_cookie(client: TestClient, db: Session, settings: Settings) -> str:
    make_user(db, settings, "root", is_admin=True)
    db.commit()
    r = client.get(f"{API}/users/me", headers=basic("root"))
    token = r.cookies.get(SESSION_COOKIE)
    assert token
    return token


def _create(client: TestClient, headers: dict[str, str], cookie: str | None, name: str) -> int:
    client.cookies.clear()
    if cookie:
        client.cookies.set(SESSION_COOKIE, cookie)
    return client.post(f"{API}/projects", json={"name": name}, headers=headers).status_code


def test_cookie_writes_from_a_foreign_origin_are_refused(client: TestClient, admin_cookie: str) -> None:
    assert _create(client, {"Origin": FOREIGN}, admin_cookie, "A") == 403
    assert _create(client, {"Origin": "null"}, admin_cookie, "B") == 403
    assert _create(client, {"Origin": OWN}, admin_cookie, "C") == 201
    assert _create(client, {}, admin_cookie, "D") == 201  # scripts send no Origin


def test_cached_basic_credentials_from_a_foreign_origin_are_refused(
    client: TestClient, admin_cookie: str
) -> None:
    assert _create(client, {**basic("root"), "Origin": FOREIGN}, None, "E") == 403
    assert _create(client, basic("root"), None, "F") == 201


def test_reads_from_a_foreign_origin_are_answered(client: TestClient, admin_cookie: str) -> None:
    """A cross-site read cannot be seen by the foreign page (no CORS), so it is not refused."""
    client.cookies.set(SESSION_COOKIE, admin_cookie)
    r = client.get(f"{API}/projects", headers={"Origin": FOREIGN})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers


def test_listed_origins_may_write(
    settings: Settings, database: Database, db: Session, admin_cookie: str
) -> None:
    app = create_app(settings.model_copy(update={"allowed_origins": [FOREIGN]}), database=database)
    with TestClient(app) as other:
        assert _create(other, {"Origin": FOREIGN}, admin_cookie, "G") == 201


@pytest.mark.parametrize(
    "path", [f"{API}/users/me", f"{API}/nowhere", "/healthz", "/metrics", f"{API}/openapi.json"]
)
def test_every_response_carries_the_security_headers(
    client: TestClient, admin_cookie: str, path: str
) -> None:
    client.cookies.set(SESSION_COOKIE, admin_cookie)
    r = client.get(path)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert r.headers["x-request-id"]


def test_the_docs_page_gets_a_restrictive_policy_of_its_own(client: TestClient) -> None:
    r = client.get(f"{API}/docs")
    policy = r.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "connect-src 'self'" in policy


@pytest.mark.parametrize("secure", [False, True])
def test_cookie_flags(settings: Settings, database: Database, db: Session, secure: bool) -> None:
    make_user(db, settings, "alice")
    db.commit()
    app = create_app(settings.model_copy(update={"cookie_secure": secure}), database=database)
    with TestClient(app) as other:
        set_cookie = other.get(f"{API}/users/me", headers=basic("alice")).headers["set-cookie"]
    flags = {part.strip().split("=")[0] for part in set_cookie.split(";")}
    assert {"HttpOnly", "SameSite", "Path"} <= flags
    assert "SameSite=Lax" in set_cookie
    assert ("Secure" in flags) is secure
