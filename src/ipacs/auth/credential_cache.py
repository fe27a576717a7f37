"""Recently verified Basic credentials, so a script that sends Basic on every
request pays one Argon2 verification per minute, not per request.

Entries are keyed by HMAC(per-process secret, username + password): the
password is never kept, and the key is useless outside this process. Each
entry remembers the password hash it was verified against; a password change
anywhere (any process) changes the stored hash and so voids the entry.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass

from ipacs import clock


@dataclass
class CachedCredential:
    user_id: int
    password_hash: str
    verified_at: float
    # The session handed to this credential, reused while it stays valid so
    # that cookie-less Basic clients do not pile up sessions.
    session_token: str | None = None


class CredentialCache:
    def __init__(self, ttl_seconds: int, max_entries: int = 10000) -> None:
        self._secret = secrets.token_bytes(32)
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[bytes, CachedCredential] = {}
        self._lock = threading.Lock()

    def key(self, username: str, password: str) -> bytes:
        message = username.encode() + b"\x00" + password.encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def get(self, key: bytes) -> CachedCredential | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry and clock.now().timestamp() - entry.verified_at > self._ttl:
                del self._entries[key]
                return None
            return entry

    def put(self, key: bytes, entry: CachedCredential) -> None:
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key] = entry

    def drop_user(self, user_id: int) -> None:
        with self._lock:
            for key in [k for k, e in self._entries.items() if e.user_id == user_id]:
                del self._entries[key]
