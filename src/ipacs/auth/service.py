"""Authentication: Basic credentials and session tokens to a `Caller`.

This module knows nothing of HTTP; `auth.dependencies` adapts it to FastAPI.
Each call runs in its own short transaction, before the request's own one
begins, so that touching a session never waits on the request's write lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import Row, select
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

_UserRow = Row[int, str, str, bool, bool, str]
_USER_COLUMNS = select(
    User.id, User.username, User.full_name, User.is_admin, User.is_active, User.password_hash
)


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
        self._flights = [threading.Lock() for _ in range(64)]
        self.throttle = LoginThrottle(
            settings.login_max_failures,
            settings.login_max_failures_per_address,
            settings.login_failure_window,
        )

    def _find_session(self, db: Session, token: str) -> tuple[Caller, bool] | None:
        live = sessions.find_session(
            db, token, self.settings.session_idle_timeout, self.settings.session_absolute_lifetime
        )
        if live is None:
            return None
        stale = clock.now() - live.last_seen_at >= sessions.TOUCH_INTERVAL
        return live.caller, stale

    def _touch(self, token: str) -> None:
        with self.database.session(write=True) as db, db.begin():
            live = sessions.find_session(
                db,
                token,
                self.settings.session_idle_timeout,
                self.settings.session_absolute_lifetime,
            )
            if live:
                sessions.touch_session(db, live)

    def from_session(self, token: str) -> Caller | None:
        with self.database.session() as db:
            result = self._find_session(db, token)
        if result is None:
            return None
        caller, stale = result
        if stale:
            self._touch(token)
        return caller

    def _flight(self, key: bytes) -> threading.Lock:
        """The lock for one credential: concurrent first requests verify (and open a session) once."""
        return self._flights[key[0] % len(self._flights)]

    def _verified(self, key: bytes, user: _UserRow | None, password: str) -> CachedCredential | None:
        """The cache entry for a correct password, verifying with Argon2 only on a miss."""

        def fresh() -> CachedCredential | None:
            cached = self.cache.get(key)
            if cached and user and user.id == cached.user_id and user.password_hash == cached.password_hash:
                return cached
            return None

        if cached := fresh():
            return cached
        with self._flight(key):
            if cached := fresh():
                return cached
            if not self.passwords.verify(user.password_hash if user else None, password) or user is None:
                return None
            cached = CachedCredential(user.id, user.password_hash, clock.now().timestamp())
            self.cache.put(key, cached)
            return cached

    def from_basic(
        self, username: str, password: str, address: str, cookie_token: str | None
    ) -> Authenticated:
        wait = self.throttle.retry_after(username, address)
        if wait:
            raise TooManyRequests("Too many failed logins; try again later", retry_after=wait)
        key = self.cache.key(username, password)
        with self.database.session() as db:
            user = db.execute(_USER_COLUMNS.where(User.username == username)).first()
            cached = self._verified(key, user, password)
            if cached is None or user is None or not user.is_active:
                self.throttle.record_failure(username, address)
                raise Unauthorized("Invalid username or password")
            caller = Caller(user.id, user.username, user.full_name, user.is_admin)
            if cookie_token:
                current = self._find_session(db, cookie_token)
                if current and current[0].id == caller.id:
                    return Authenticated(caller)
            # This credential's session, looked up in the same transaction (the common case
            # for clients that send Basic on every request and ignore the cookie).
            token = cached.session_token
            reused = self._find_session(db, token) if token else None
        self.throttle.record_success(username)
        if token and reused:
            if reused[1]:
                self._touch(token)
            return Authenticated(caller, token)
        with self._flight(key):
            # Reuse this credential's session while it lives, else open one.
            if cached.session_token and self.from_session(cached.session_token):
                return Authenticated(caller, cached.session_token)
            with self.database.session(write=True) as db, db.begin():
                cached.session_token = sessions.create_session(
                    db, caller.id, self.settings.max_sessions_per_user
                )
            return Authenticated(caller, cached.session_token)

    def logout(self, token: str) -> None:
        with self.database.session(write=True) as db, db.begin():
            sessions.end_session(db, token)

    def forget_user(self, user_id: int) -> None:
        """Drop in-process cached credentials (sessions are ended in the DB by the caller)."""
        self.cache.drop_user(user_id)
