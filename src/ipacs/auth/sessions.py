"""Server-side sessions: the database holds SHA-256(token), the client the token."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from ipacs import clock
from ipacs.auth.caller import Caller
from ipacs.models import User, UserSession

# last_seen_at is written at most this often, so reads stay reads.
TOUCH_INTERVAL = timedelta(seconds=60)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(session: Session, user_id: int, max_per_user: int) -> str:
    """Open a session for the user and return its token (shown to the client once)."""
    token = secrets.token_urlsafe(32)
    session.add(UserSession(token_hash=hash_token(token), user_id=user_id))
    session.flush()
    # Keep only the newest sessions of this user.
    keep = (
        select(UserSession.id)
        .where(UserSession.user_id == user_id)
        .order_by(UserSession.created_at.desc(), UserSession.id.desc())
        .limit(max_per_user)
    )
    session.execute(delete(UserSession).where(UserSession.user_id == user_id, UserSession.id.not_in(keep)))
    return token


@dataclass(frozen=True, slots=True)
class LiveSession:
    id: int
    last_seen_at: datetime
    caller: Caller


# Checked on every cookie request: plain columns, no ORM objects to build.
_SESSION_COLUMNS = select(
    UserSession.id,
    UserSession.created_at,
    UserSession.last_seen_at,
    User.id,
    User.username,
    User.full_name,
    User.is_admin,
    User.is_active,
    User.password_changed_at,
).join(User, User.id == UserSession.user_id)


def find_session(
    session: Session, token: str, idle_timeout: int, absolute_lifetime: int
) -> LiveSession | None:
    """The live session for a token and its active user, or None."""
    row = session.execute(_SESSION_COLUMNS.where(UserSession.token_hash == hash_token(token))).first()
    if row is None:
        return None
    session_id, created_at, last_seen_at, user_id, username, full_name, is_admin, is_active, changed_at = row
    now = clock.now()
    if (
        not is_active
        or now - last_seen_at >= timedelta(seconds=idle_timeout)
        or now - created_at >= timedelta(seconds=absolute_lifetime)
        or created_at < changed_at
    ):
        return None
    return LiveSession(session_id, last_seen_at, Caller(user_id, username, full_name, is_admin))


def touch_session(session: Session, live: LiveSession) -> None:
    now = clock.now()
    if now - live.last_seen_at >= TOUCH_INTERVAL:
        session.execute(update(UserSession).where(UserSession.id == live.id).values(last_seen_at=now))


def end_session(session: Session, token: str) -> None:
    session.execute(delete(UserSession).where(UserSession.token_hash == hash_token(token)))


def end_user_sessions(session: Session, user_id: int) -> None:
    session.execute(delete(UserSession).where(UserSession.user_id == user_id))


def count_live_sessions(session: Session, idle_timeout: int) -> int:
    since = clock.now() - timedelta(seconds=idle_timeout)
    stmt = select(func.count()).select_from(UserSession).where(UserSession.last_seen_at >= since)
    return session.scalar(stmt) or 0
