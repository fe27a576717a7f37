"""The users API: admin management, self-service, disabling and the last-administrator guard."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from ipacs.config import Settings
from ipacs.models import AuditEvent, User
from tests.factories import DEFAULT_PASSWORD, basic, grant, make_project, make_user

USERS = "/api/v1.0/users"
ME = f"{USERS}/me"
ROOT = basic("root")
ETAG = re.compile(r'^"[0-9a-f]{12}\.\d+"$')


@pytest.fixture
def people(db: Session, settings: Settings) -> None:
    """An administrator `root` and two regular users, `alice` and `bob`."""
    make_user(db, settings, "root", is_admin=True, full_name="Root Admin")
    make_user(db, settings, "alice", full_name="Alice Liddell")
    make_user(db, settings, "bob", full_name="Bob Builder")
    db.commit()


def _user_row(db: Session, username: str) -> User:
    """The stored row as it is now, detached, so that no transaction stays open (SQLite locks)."""
    db.rollback()
    user = db.scalars(select(User).where(User.username == username)).one()
    db.refresh(user)
    db.expunge(user)
    db.rollback()
    return user


def _next_link(link: str | None) -> str | None:
    if link is None:
        return None
    match = re.fullmatch(r'<([^>]+)>; rel="next"', link)
    assert match, link
    return match.group(1)


# -- admin ----------------------------------------------------------------------------------------


def test_admin_lists_users_in_pages(client: TestClient, db: Session, settings: Settings) -> None:
    make_user(db, settings, "root", is_admin=True)
    for i in range(6):
        make_user(db, settings, f"user{i}")
    db.commit()
    seen: list[str] = []
    url: str | None = f"{USERS}?limit=3"
    pages = 0
    while url:
        r = client.get(url, headers=ROOT)
        assert r.status_code == 200
        assert r.headers["x-total-count"] == "7"
        names = [u["username"] for u in r.json()]
        assert 1 <= len(names) <= 3
        seen += names
        url = _next_link(r.headers.get("link"))
        if url:
            assert "limit=3" in url
        pages += 1
    assert pages == 3
    assert seen == ["root"] + [f"user{i}" for i in range(6)]


def test_list_with_a_page_that_holds_everything_has_no_next_link(client: TestClient, people: None) -> None:
    r = client.get(USERS, headers=ROOT)
    assert r.status_code == 200
    assert r.headers["x-total-count"] == "3"
    assert "link" not in r.headers
    assert [u["username"] for u in r.json()] == ["root", "alice", "bob"]


def test_list_with_offset_paging(client: TestClient, people: None) -> None:
    r = client.get(f"{USERS}?limit=1&offset=1", headers=ROOT)
    assert [u["username"] for u in r.json()] == ["alice"]
    assert "offset=2" in (_next_link(r.headers.get("link")) or "")


def test_list_search(client: TestClient, people: None) -> None:
    r = client.get(f"{USERS}?search=LIDD", headers=ROOT)
    assert [u["username"] for u in r.json()] == ["alice"]
    assert r.headers["x-total-count"] == "1"


def test_admin_creates_a_user(client: TestClient, people: None, db: Session) -> None:
    r = client.post(
        USERS,
        json={"username": "carol", "password": "carol-pw-1", "full_name": "Carol", "email": "c@example.org"},
        headers=ROOT,
    )
    assert r.status_code == 201
    assert ETAG.match(r.headers["etag"])
    body = r.json()
    assert body["username"] == "carol"
    assert body["full_name"] == "Carol"
    assert body["email"] == "c@example.org"
    assert body["is_admin"] is False and body["is_active"] is True
    assert isinstance(body["id"], int) and body["uuid"]
    assert not {"password", "password_hash"} & set(body)
    assert "carol-pw-1" not in r.text
    # The new account works, and its creator is recorded.
    assert client.get(ME, headers=basic("carol", "carol-pw-1")).status_code == 200
    carol = _user_row(db, "carol")
    assert carol.creator_id == _user_row(db, "root").id
    assert carol.password_hash.startswith("$argon2id$")


def test_created_admin_can_administer(client: TestClient, people: None) -> None:
    r = client.post(
        USERS, json={"username": "dora", "password": "dora-pw-12", "is_admin": True}, headers=ROOT
    )
    assert r.status_code == 201
    assert client.get(USERS, headers=basic("dora", "dora-pw-12")).status_code == 200


def test_admin_reads_a_user_with_its_etag(client: TestClient, people: None) -> None:
    r = client.get(f"{USERS}/alice", headers=ROOT)
    assert r.status_code == 200
    assert r.json()["full_name"] == "Alice Liddell"
    assert ETAG.match(r.headers["etag"])


def test_update_is_partial_and_changes_the_etag(client: TestClient, people: None) -> None:
    before = client.put(f"{USERS}/alice", json={"email": "alice@example.org"}, headers=ROOT)
    assert before.status_code == 200
    r = client.put(
        f"{USERS}/alice",
        json={"full_name": "Alice L."},
        headers={**ROOT, "If-Match": before.headers["etag"]},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["full_name"] == "Alice L."
    assert body["email"] == "alice@example.org"  # untouched
    assert body["is_admin"] is False and body["is_active"] is True
    assert r.headers["etag"] != before.headers["etag"]
    assert client.get(f"{USERS}/alice", headers=ROOT).headers["etag"] == r.headers["etag"]
    # The old ETag no longer matches: the update is refused, and nothing changes.
    stale = client.put(
        f"{USERS}/alice", json={"full_name": "Lost"}, headers={**ROOT, "If-Match": before.headers["etag"]}
    )
    assert stale.status_code == 412
    assert client.get(f"{USERS}/alice", headers=ROOT).json()["full_name"] == "Alice L."


def test_update_is_audited(client: TestClient, people: None, db: Session) -> None:
    client.put(f"{USERS}/alice", json={"full_name": "Alice L.", "password": "new-secret-1"}, headers=ROOT)
    db.rollback()
    event = db.scalars(
        select(AuditEvent).where(AuditEvent.entity_type == "user", AuditEvent.action == "update")
    ).one()
    who, before, after = event.username, event.before, event.after
    db.rollback()
    assert who == "root"
    assert before == {"full_name": "Alice Liddell", "password": "(unchanged)"}
    assert after == {"full_name": "Alice L.", "password": "(changed)"}


def test_disable_keeps_the_account(client: TestClient, people: None, db: Session) -> None:
    r = client.delete(f"{USERS}/bob", headers=ROOT)
    assert r.status_code == 200
    assert r.json()["is_active"] is False
    assert ETAG.match(r.headers["etag"])
    # Never hard-deleted: the row stays, listed, and readable.
    assert _user_row(db, "bob").is_active is False
    listed = {u["username"]: u["is_active"] for u in client.get(USERS, headers=ROOT).json()}
    assert listed == {"root": True, "alice": True, "bob": False}
    assert client.get(f"{USERS}/bob", headers=ROOT).json()["is_active"] is False
    assert client.get(ME, headers=basic("bob")).status_code == 401
    # Disabling again is harmless; enabling brings the login back.
    assert client.delete(f"{USERS}/bob", headers=ROOT).status_code == 200
    assert client.put(f"{USERS}/bob", json={"is_active": True}, headers=ROOT).json()["is_active"] is True
    assert client.get(ME, headers=basic("bob")).status_code == 200


def test_disable_with_stale_if_match_is_refused(client: TestClient, people: None, db: Session) -> None:
    etag = client.get(f"{USERS}/bob", headers=ROOT).headers["etag"]
    client.put(f"{USERS}/bob", json={"full_name": "Robert"}, headers=ROOT)
    r = client.delete(f"{USERS}/bob", headers={**ROOT, "If-Match": etag})
    assert r.status_code == 412
    assert _user_row(db, "bob").is_active is True


def test_unknown_user_is_404_for_an_admin(client: TestClient, people: None) -> None:
    for method in ("GET", "PUT", "DELETE"):
        kwargs = {"json": {"full_name": "x"}} if method == "PUT" else {}
        r = client.request(method, f"{USERS}/nobody", headers=ROOT, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 404, method


# -- regular users --------------------------------------------------------------------------------


def test_non_admin_cannot_manage_users(client: TestClient, people: None, db: Session) -> None:
    alice = basic("alice")
    assert client.get(USERS, headers=alice).status_code == 403
    r = client.post(USERS, json={"username": "eve", "password": "eve-pw-123"}, headers=alice)
    assert r.status_code == 403
    assert client.get(f"{USERS}/bob", headers=alice).status_code == 403
    assert client.put(f"{USERS}/bob", json={"full_name": "Hacked"}, headers=alice).status_code == 403
    assert client.delete(f"{USERS}/bob", headers=alice).status_code == 403
    # Deleting itself is an admin action too.
    assert client.delete(f"{USERS}/alice", headers=alice).status_code == 403
    db.rollback()
    assert db.scalars(select(User).where(User.username == "eve")).first() is None
    db.rollback()
    bob = _user_row(db, "bob")
    assert bob.full_name == "Bob Builder" and bob.is_active


def test_non_admin_gets_403_not_404_for_unknown_users(client: TestClient, people: None) -> None:
    # The answer must not reveal which usernames exist.
    assert client.get(f"{USERS}/nobody", headers=basic("alice")).status_code == 403


def test_user_reads_itself(client: TestClient, people: None) -> None:
    r = client.get(f"{USERS}/alice", headers=basic("alice"))
    assert r.status_code == 200
    assert r.json()["username"] == "alice"
    assert ETAG.match(r.headers["etag"])


def test_user_changes_its_own_name_and_password(client: TestClient, people: None) -> None:
    r = client.put(f"{USERS}/alice", json={"full_name": "Alice Pleasance"}, headers=basic("alice"))
    assert r.status_code == 200
    assert r.json()["full_name"] == "Alice Pleasance"
    r = client.put(
        f"{USERS}/alice",
        json={"password": "a-new-password", "current_password": DEFAULT_PASSWORD},
        headers=basic("alice"),
    )
    assert r.status_code == 200
    client.cookies.clear()
    assert client.get(ME, headers=basic("alice")).status_code == 401
    assert client.get(ME, headers=basic("alice", "a-new-password")).status_code == 200


def test_wrong_current_password_is_refused(client: TestClient, people: None) -> None:
    r = client.put(
        f"{USERS}/alice",
        json={"password": "a-new-password", "current_password": "not-my-password"},
        headers=basic("alice"),
    )
    assert r.status_code == 400
    assert r.json()["details"] == [{"field": "current_password", "message": "does not match"}]
    client.cookies.clear()
    assert client.get(ME, headers=basic("alice")).status_code == 200


@pytest.mark.parametrize("change", [{"is_admin": True}, {"is_active": False}, {"is_admin": False}])
def test_user_cannot_change_its_own_privileges(
    client: TestClient, people: None, db: Session, change: dict[str, bool]
) -> None:
    r = client.put(f"{USERS}/alice", json={**change, "full_name": "Queen"}, headers=basic("alice"))
    assert r.status_code == 403
    alice = _user_row(db, "alice")
    assert (alice.is_admin, alice.is_active, alice.full_name) == (False, True, "Alice Liddell")


def test_me_describes_the_caller_and_its_projects(client: TestClient, people: None) -> None:
    r = client.get(ME, headers=basic("alice"))
    assert r.status_code == 200
    body = r.json()
    assert body["username"] == "alice"
    assert body["full_name"] == "Alice Liddell"
    assert body["is_admin"] is False
    assert body["projects"] == []
    assert not {"password", "password_hash"} & set(body)


def test_me_lists_the_projects_granted(client: TestClient, db: Session, settings: Settings) -> None:
    root = make_user(db, settings, "root", is_admin=True)
    alice = make_user(db, settings, "alice")
    trial = make_project(db, root, "Trial")
    make_project(db, root, "Other")
    grant(db, trial, alice, "user")
    db.commit()
    projects = client.get(ME, headers=basic("alice")).json()["projects"]
    assert projects == [{"project_id": trial.id, "project_name": "Trial", "role": "user"}]


# -- the last administrator -----------------------------------------------------------------------


def test_last_admin_cannot_be_demoted(client: TestClient, people: None, db: Session) -> None:
    r = client.put(f"{USERS}/root", json={"is_admin": False}, headers=ROOT)
    assert r.status_code == 409
    assert r.json()["error"] == "conflict"
    assert _user_row(db, "root").is_admin is True


def test_admin_cannot_disable_itself(client: TestClient, people: None, db: Session) -> None:
    assert client.delete(f"{USERS}/root", headers=ROOT).status_code == 409
    r = client.put(f"{USERS}/root", json={"is_active": False}, headers=ROOT)
    assert r.status_code == 409
    assert _user_row(db, "root").is_active is True


def test_one_of_two_admins_may_step_down_but_not_the_last(
    client: TestClient, people: None, db: Session, settings: Settings
) -> None:
    make_user(db, settings, "root2", is_admin=True)
    db.commit()
    r = client.put(f"{USERS}/root2", json={"is_admin": False}, headers=ROOT)
    assert r.status_code == 200 and r.json()["is_admin"] is False
    assert client.put(f"{USERS}/root", json={"is_admin": False}, headers=ROOT).status_code == 409


def test_a_disabled_admin_does_not_count(
    client: TestClient, people: None, db: Session, settings: Settings
) -> None:
    make_user(db, settings, "root2", is_admin=True)
    db.commit()
    assert client.delete(f"{USERS}/root2", headers=ROOT).status_code == 200
    assert client.put(f"{USERS}/root", json={"is_admin": False}, headers=ROOT).status_code == 409
    assert _user_row(db, "root").is_admin is True
