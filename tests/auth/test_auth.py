"""Basic and session-cookie authentication, expiry, logout, throttling."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.models import UserSession
from tests.conftest import FakeClock
from tests.factories import basic, make_user

ME = "/api/v1.0/users/me"


def _session_count(db: Session) -> int:
    db.rollback()
    return db.scalar(select(func.count()).select_from(UserSession)) or 0


def _with_cookie(client: TestClient, token: str) -> TestClient:
    client.cookies.clear()
    client.cookies.set("ipacs_session", token)
    return client


def _login(client: TestClient, username: str = "alice") -> str:
    r = client.get(ME, headers=basic(username))
    assert r.status_code == 200
    return r.cookies["ipacs_session"]


def test_basic_ok_sets_session_cookie(client: TestClient, db: Session, settings: Settings) -> None:
    make_user(db, settings, "alice")
    db.commit()
    r = client.get(ME, headers=basic("alice"))
    assert r.status_code == 200
    assert r.json()["username"] == "alice"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("ipacs_session=")
    for flag in ("HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in cookie
    assert "Secure" not in cookie


def test_cookie_secure_when_configured(client: TestClient, db: Session, settings: Settings) -> None:
    make_user(db, settings, "alice")
    db.commit()
    client.app.state.settings.cookie_secure = True  # type: ignore[attr-defined]
    # The middleware read the setting at start; rebuild it the way serve does.
    from ipacs.app import create_app

    app = create_app(settings.model_copy(update={"cookie_secure": True}), database=client.app.state.database)  # type: ignore[attr-defined]
    with TestClient(app) as secure_client:
        r = secure_client.get(ME, headers=basic("alice"))
    assert "Secure" in r.headers["set-cookie"]


def test_cookie_alone_is_accepted_and_not_reissued(
    client: TestClient, db: Session, settings: Settings
) -> None:
    make_user(db, settings, "alice")
    db.commit()
    token = _login(client)
    client.cookies.clear()
    r = _with_cookie(client, token).get(ME)
    assert r.status_code == 200
    assert "set-cookie" not in r.headers
    # Basic plus a valid cookie of the same user: no second session.
    r = _with_cookie(client, token).get(ME, headers=basic("alice"))
    assert r.status_code == 200
    assert "set-cookie" not in r.headers


def test_session_token_is_stored_hashed(client: TestClient, db: Session, settings: Settings) -> None:
    make_user(db, settings, "alice")
    db.commit()
    token = _login(client)
    db.rollback()
    stored = db.scalars(select(UserSession.token_hash)).all()
    assert stored and token not in stored


def test_bad_password_and_unknown_user_answer_alike(
    client: TestClient, db: Session, settings: Settings
) -> None:
    make_user(db, settings, "alice")
    db.commit()
    bad = client.get(ME, headers=basic("alice", "wrong-password"))
    unknown = client.get(ME, headers=basic("nobody", "wrong-password"))
    for r in (bad, unknown):
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Basic realm="iPACS"'
        assert r.json()["error"] == "unauthorized"
        assert "set-cookie" not in r.headers
    assert bad.json() == unknown.json()


def test_missing_and_malformed_credentials(client: TestClient) -> None:
    for headers in (
        {},
        {"Authorization": "Basic !!!"},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic " + "bm9jb2xvbg=="},
    ):
        r = client.get(ME, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == 'Basic realm="iPACS"'
        assert r.json()["success"] is False
    r = _with_cookie(client, "forged").get(ME)
    assert r.status_code == 401


def test_logout_ends_the_session(client: TestClient, db: Session, settings: Settings) -> None:
    make_user(db, settings, "alice")
    db.commit()
    token = _login(client)
    client.cookies.clear()
    r = _with_cookie(client, token).post("/api/v1.0/logout")
    assert r.status_code == 200
    assert r.json()["success"] is True
    client.cookies.clear()
    assert _with_cookie(client, token).get(ME).status_code == 401


def test_idle_timeout(client: TestClient, db: Session, settings: Settings, fake_clock: FakeClock) -> None:
    make_user(db, settings, "alice")
    db.commit()
    token = _login(client)
    client.cookies.clear()
    idle = settings.session_idle_timeout
    fake_clock.advance(seconds=idle - 10)
    assert _with_cookie(client, token).get(ME).status_code == 200
    # The request above counted as activity.
    fake_clock.advance(seconds=idle - 10)
    assert _with_cookie(client, token).get(ME).status_code == 200
    fake_clock.advance(seconds=idle + 1)
    assert _with_cookie(client, token).get(ME).status_code == 401


def test_absolute_lifetime(
    client: TestClient, db: Session, settings: Settings, fake_clock: FakeClock
) -> None:
    make_user(db, settings, "alice")
    db.commit()
    token = _login(client)
    client.cookies.clear()
    step = settings.session_idle_timeout // 2
    elapsed = 0
    while elapsed + step < settings.session_absolute_lifetime:
        fake_clock.advance(seconds=step)
        elapsed += step
        assert _with_cookie(client, token).get(ME).status_code == 200
    fake_clock.advance(seconds=step)
    assert _with_cookie(client, token).get(ME).status_code == 401


def test_disabling_a_user_ends_its_sessions_at_once(
    client: TestClient, db: Session, settings: Settings
) -> None:
    make_user(db, settings, "root", is_admin=True)
    make_user(db, settings, "alice")
    db.commit()
    token = _login(client, "alice")
    client.cookies.clear()
    r = client.delete("/api/v1.0/users/alice", headers=basic("root"))
    assert r.status_code == 200
    assert r.json()["is_active"] is False
    client.cookies.clear()
    assert _with_cookie(client, token).get(ME).status_code == 401
    # The Basic credentials cached a moment ago are refused too.
    assert client.get(ME, headers=basic("alice")).status_code == 401


def test_password_change_ends_sessions(client: TestClient, db: Session, settings: Settings) -> None:
    make_user(db, settings, "alice")
    db.commit()
    token = _login(client)
    client.cookies.clear()
    r = client.put("/api/v1.0/users/alice", json={"password": "new-password-1"}, headers=basic("alice"))
    assert r.status_code == 200
    client.cookies.clear()
    assert _with_cookie(client, token).get(ME).status_code == 401
    assert client.get(ME, headers=basic("alice")).status_code == 401
    assert client.get(ME, headers=basic("alice", "new-password-1")).status_code == 200


def test_failed_logins_are_throttled(
    client: TestClient, db: Session, settings: Settings, fake_clock: FakeClock
) -> None:
    make_user(db, settings, "alice")
    db.commit()
    for name in ("alice", "nobody"):
        for _ in range(settings.login_max_failures):
            assert client.get(ME, headers=basic(name, "wrong-pw-123")).status_code == 401
        r = client.get(ME, headers=basic(name, "wrong-pw-123"))
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) > 0
        assert r.json()["error"] == "too_many_requests"
    # Even the right password waits out the lock...
    assert client.get(ME, headers=basic("alice")).status_code == 429
    fake_clock.advance(seconds=settings.login_failure_window + 1)
    # ...and then works.
    assert client.get(ME, headers=basic("alice")).status_code == 200


def test_throttle_per_address(client: TestClient, settings: Settings, fake_clock: FakeClock) -> None:
    for i in range(settings.login_max_failures_per_address):
        client.get(ME, headers=basic(f"user{i}", "wrong-pw-123"))
    r = client.get(ME, headers=basic("someone-new", "wrong-pw-123"))
    assert r.status_code == 429


def test_cookieless_basic_client_does_not_pile_up_sessions(
    client: TestClient, db: Session, settings: Settings
) -> None:
    make_user(db, settings, "alice")
    db.commit()
    for _ in range(200):
        client.cookies.clear()
        assert client.get(ME, headers=basic("alice")).status_code == 200
    assert _session_count(db) <= 1


def test_sessions_per_user_are_capped(client: TestClient, db: Session, settings: Settings) -> None:
    make_user(db, settings, "alice")
    db.commit()
    authenticator = client.app.state.authenticator  # type: ignore[attr-defined]
    for _ in range(settings.max_sessions_per_user + 5):
        authenticator.cache = type(authenticator.cache)(60)  # a new client process each time
        client.cookies.clear()
        assert client.get(ME, headers=basic("alice")).status_code == 200
    assert _session_count(db) == settings.max_sessions_per_user
