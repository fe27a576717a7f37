"""Server-side sessions: the database holds SHA-256(token), the client the token."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from ipacs import clock
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


def find_session(
    session: Session, token: str, idle_timeout: int, absolute_lifetime: int
) -> tuple[UserSession, User] | None:
    """The live session for a token and its active user, or None."""
    row = session.execute(
        select(UserSession, User)
        .join(User, User.id == UserSession.user_id)
        .where(UserSession.token_hash == hash_token(token))
    ).first()
    if row is None:
        return None
    user_session, user = row
    now = clock.now()
    if (
        not user.is_active
        or now - user_session.last_seen_at >= timedelta(seconds=idle_timeout)
        or now - user_session.created_at >= timedelta(seconds=absolute_lifetime)
        or user_session.created_at < user.password_changed_at
    ):
        return None
    return user_session, user


def touch_session(session: Session, user_session: UserSession) -> None:
    now = clock.now()
    if now - user_session.last_seen_at >= TOUCH_INTERVAL:
        session.execute(update(UserSession).where(UserSession.id == user_session.id).values(last_seen_at=now))


def end_session(session: Session, token: str) -> None:
    session.execute(delete(UserSession).where(UserSession.token_hash == hash_token(token)))


def end_user_sessions(session: Session, user_id: int) -> None:
    session.execute(delete(UserSession).where(UserSession.user_id == user_id))


def count_live_sessions(session: Session, idle_timeout: int) -> int:
    since = clock.now() - timedelta(seconds=idle_timeout)
    stmt = select(func.count()).select_from(UserSession).where(UserSession.last_seen_at >= since)
    return session.scalar(stmt) or 0
