"""Authentication: Basic credentials and session tokens to a `Caller`.

This module knows nothing of HTTP; `auth.dependencies` adapts it to FastAPI.
Each call runs in its own short transaction, before the request's own one
begins, so that touching a session never waits on the request's write lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipacs import clock
from ipacs.auth import sessions
from ipacs.auth.caller import Caller
from ipacs.auth.credential_cache import CachedCredential, CredentialCache
from ipacs.auth.passwords import Passwords
from ipacs.auth.throttle import LoginThrottle
from ipacs.config import Settings
from ipacs.db.engine import Database
from ipacs.errors import TooManyRequests, Unauthorized
from ipacs.models import User


@dataclass(frozen=True)
class Authenticated:
    caller: Caller
    # A token the client should store as its cookie, when it has no valid one.
    new_session_token: str | None = None


class Authenticator:
    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self.passwords = Passwords(settings)
        self.cache = CredentialCache(settings.credential_cache_seconds)
        self.throttle = LoginThrottle(
            settings.login_max_failures,
            settings.login_max_failures_per_address,
            settings.login_failure_window,
        )

    def _find_session(self, db: Session, token: str) -> tuple[Caller, bool] | None:
        found = sessions.find_session(
            db, token, self.settings.session_idle_timeout, self.settings.session_absolute_lifetime
        )
        if found is None:
            return None
        user_session, user = found
        stale = clock.now() - user_session.last_seen_at >= sessions.TOUCH_INTERVAL
        return Caller.from_user(user), stale

    def _touch(self, token: str) -> None:
        with self.database.session(write=True) as db, db.begin():
            found = sessions.find_session(
                db,
                token,
                self.settings.session_idle_timeout,
                self.settings.session_absolute_lifetime,
            )
            if found:
                sessions.touch_session(db, found[0])

    def from_session(self, token: str) -> Caller | None:
        with self.database.session() as db:
            result = self._find_session(db, token)
        if result is None:
            return None
        caller, stale = result
        if stale:
            self._touch(token)
        return caller

    def from_basic(
        self, username: str, password: str, address: str, cookie_token: str | None
    ) -> Authenticated:
        wait = self.throttle.retry_after(username, address)
        if wait:
            raise TooManyRequests("Too many failed logins; try again later", retry_after=wait)
        key = self.cache.key(username, password)
        cached = self.cache.get(key)
        with self.database.session() as db:
            user = db.scalars(select(User).where(User.username == username)).first()
            if cached and user and user.id == cached.user_id and user.password_hash == cached.password_hash:
                ok = True
            else:
                cached = None
                ok = self.passwords.verify(user.password_hash if user else None, password)
            if not ok or user is None or not user.is_active:
                self.throttle.record_failure(username, address)
                raise Unauthorized("Invalid username or password")
            caller = Caller.from_user(user)
            password_hash = user.password_hash
            if cookie_token:
                current = self._find_session(db, cookie_token)
                if current and current[0].id == caller.id:
                    return Authenticated(caller)
        self.throttle.record_success(username)
        if cached is None:
            cached = CachedCredential(user.id, password_hash, clock.now().timestamp())
            self.cache.put(key, cached)
        # Reuse this credential's session while it lives, else open one.
        if cached.session_token and self.from_session(cached.session_token):
            return Authenticated(caller, cached.session_token)
        with self.database.session(write=True) as db, db.begin():
            cached.session_token = sessions.create_session(db, caller.id, self.settings.max_sessions_per_user)
        return Authenticated(caller, cached.session_token)

    def logout(self, token: str) -> None:
        with self.database.session(write=True) as db, db.begin():
            sessions.end_session(db, token)

    def forget_user(self, user_id: int) -> None:
        """Drop in-process cached credentials (sessions are ended in the DB by the caller)."""
        self.cache.drop_user(user_id)
