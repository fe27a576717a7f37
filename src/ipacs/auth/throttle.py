"""Failed-login throttling per username and per client address.

Counts live in this process's memory: with N server processes an attacker
gets at most N times the allowance, as docs/authentication.md says.
The answer is the same whether or not the username exists.
"""

from __future__ import annotations

import threading
from collections import deque

from ipacs import clock


class LoginThrottle:
    def __init__(self, max_per_user: int, max_per_address: int, window_seconds: int) -> None:
        self._limits = {"user": max_per_user, "addr": max_per_address}
        self._window = window_seconds
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _prune(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, username: str, address: str) -> int:
        """Seconds until another attempt is allowed; 0 when allowed now."""
        now = clock.now().timestamp()
        wait = 0.0
        with self._lock:
            for key in (("user", username.lower()), ("addr", address)):
                times = self._prune(key, now)
                if len(times) >= self._limits[key[0]]:
                    wait = max(wait, times[0] + self._window - now)
        return int(wait + 0.999)

    def record_failure(self, username: str, address: str) -> None:
        now = clock.now().timestamp()
        with self._lock:
            for key in (("user", username.lower()), ("addr", address)):
                self._failures.setdefault(key, deque()).append(now)

    def record_success(self, username: str) -> None:
        with self._lock:
            self._failures.pop(("user", username.lower()), None)
