"""Sessions rotate on login, and no session id (nor password) ever reaches a log line.

"Login" is a request with Basic credentials that carries no valid session of
that same user. It always gets a session id it did not bring: a forged,
ended, expired or another user's cookie is never adopted (no session
fixation), and a login after logout never revives the ended id. A request
that brings both Basic credentials and its own live session keeps that
session: nothing new was proven.
"""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session

from ipacs.api.middleware import SESSION_COOKIE
from ipacs.config import Settings
from ipacs.telemetry.log_format import JsonFormatter
from tests.conftest import FakeClock
from tests.factories import DEFAULT_PASSWORD, basic, make_user

ME = "/api/v1.0/users/me"


@pytest.fixture
def accounts(db: Session, settings: Settings) -> None:
    make_user(db, settings, "alice")
    make_user(db, settings, "bob")
    db.commit()


def _issued(response: Response) -> str:
    """The session id a response sets (it must set one)."""
    assert response.status_code == 200, response.text
    cookie = response.cookies.get(SESSION_COOKIE)
    assert cookie, f"no session cookie in {response.headers}"
    return cookie


def _login(client: TestClient, who: str, cookie: str | None = None) -> Response:
    client.cookies.clear()
    if cookie is not None:
        client.cookies.set(SESSION_COOKIE, cookie)
    return client.get(ME, headers=basic(who))


def _as_cookie(client: TestClient, cookie: str) -> Response:
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, cookie)
    return client.get(ME)


@pytest.mark.usefixtures("accounts")
def test_a_login_after_logout_gets_a_new_session_id(client: TestClient) -> None:
    first = _issued(_login(client, "alice"))
    client.cookies.set(SESSION_COOKIE, first)
    assert client.post("/api/v1.0/logout").status_code == 200
    assert _as_cookie(client, first).status_code == 401
    second = _issued(_login(client, "alice"))
    assert second != first
    assert _as_cookie(client, second).json()["username"] == "alice"
    assert _as_cookie(client, first).status_code == 401


@pytest.mark.usefixtures("accounts")
def test_a_forged_cookie_is_never_adopted(client: TestClient) -> None:
    forged = "attacker-chosen-session-id"
    issued = _issued(_login(client, "alice", cookie=forged))
    assert issued != forged
    assert _as_cookie(client, forged).status_code == 401


@pytest.mark.usefixtures("accounts")
def test_another_users_session_is_replaced_not_taken_over(client: TestClient) -> None:
    bobs = _issued(_login(client, "bob"))
    alices = _issued(_login(client, "alice", cookie=bobs))
    assert alices != bobs
    assert _as_cookie(client, alices).json()["username"] == "alice"
    assert _as_cookie(client, bobs).json()["username"] == "bob"


@pytest.mark.usefixtures("accounts")
def test_an_expired_session_is_replaced(
    client: TestClient, settings: Settings, fake_clock: FakeClock
) -> None:
    old = _issued(_login(client, "alice"))
    fake_clock.advance(seconds=settings.session_idle_timeout + settings.credential_cache_seconds + 1)
    assert _as_cookie(client, old).status_code == 401
    new = _issued(_login(client, "alice", cookie=old))
    assert new != old
    assert _as_cookie(client, old).status_code == 401


@pytest.mark.usefixtures("accounts")
def test_basic_with_ones_own_live_session_keeps_it(client: TestClient) -> None:
    live = _issued(_login(client, "alice"))
    r = _login(client, "alice", cookie=live)
    assert r.status_code == 200
    assert SESSION_COOKIE not in r.cookies


@pytest.mark.usefixtures("accounts")
def test_session_ids_and_passwords_never_reach_the_logs(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = []
    tokens.append(_issued(_login(client, "alice")))
    tokens.append(_issued(_login(client, "bob")))
    for token in tokens:
        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, token)
        client.get(ME)
        client.get("/api/v1.0/projects?search=x")
        client.get("/api/v1.0/projects/987654")  # a 404
        client.post("/api/v1.0/projects", json={"name": "P"})  # a 403
        client.post("/api/v1.0/projects", json={"name": "P"}, headers={"Origin": "https://evil.example"})
    client.cookies.clear()
    client.get(ME, headers=basic("alice", "wrong-password"))  # a failed login
    client.cookies.set(SESSION_COOKIE, tokens[0])
    client.post("/api/v1.0/logout")
    client.get(ME)  # the ended session: 401

    formatter = JsonFormatter()
    written = "\n".join(formatter.format(record) for record in caplog.records)
    assert "ipacs.requests" in {r.name for r in caplog.records}, "the request log was not captured"
    secrets = [*tokens, DEFAULT_PASSWORD, "wrong-password", basic("alice")["Authorization"].split()[1]]
    for secret in secrets:
        assert secret not in written, f"a secret reached the logs: {secret[:6]}..."
