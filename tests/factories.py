"""Typed factories for test data. Each flushes; the caller commits."""

from __future__ import annotations

import base64

from sqlalchemy.orm import Session

from ipacs.auth.passwords import Passwords
from ipacs.config import Settings
from ipacs.models import User

DEFAULT_PASSWORD = "correct-horse-9"


def make_user(
    session: Session,
    settings: Settings,
    username: str = "alice",
    *,
    password: str = DEFAULT_PASSWORD,
    is_admin: bool = False,
    full_name: str = "",
    is_active: bool = True,
) -> User:
    user = User(
        username=username,
        full_name=full_name or username.title(),
        password_hash=Passwords(settings).hash(password),
        is_admin=is_admin,
        is_active=is_active,
    )
    session.add(user)
    session.flush()
    return user


def basic(username: str, password: str = DEFAULT_PASSWORD) -> dict[str, str]:
    """The Authorization header for HTTP Basic."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
