"""HTTP for the client: Basic on the first request, the session cookie after it,
retries with backoff, timeouts, and every error answer raised as an exception.

Retried: connection failures (the request never reached the server), 429 and
503 (honouring Retry-After), and for idempotent requests also a connection
lost while waiting for the answer. A 401 on a session that ended is answered
by logging in again with the password, when there is one.
"""

from __future__ import annotations

import base64
import email.utils
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from ipacs import __version__
from ipacs.client.errors import ConnectionFailed, Unauthorized, error_from_response

API_PREFIX = "/api/v1.0"
SESSION_COOKIE = "ipacs_session"
RETRY_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
MAX_PAGE = 1000

M = TypeVar("M", bound=BaseModel)
Body = bytes | IO[bytes] | Iterator[bytes]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait: `backoff` doubles per attempt, up to `max_delay`."""

    retries: int = 5
    backoff: float = 0.5
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        wait = parse_retry_after(retry_after)
        if wait is None:
            wait = self.backoff * (2**attempt) * (1 + random.random() / 10)
        return min(max(wait, 0.0), self.max_delay)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


class Transport:
    """One httpx client, its session cookie and the retry policy; safe to share between threads."""

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        *,
        session: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        http_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self.username = username
        self._password = password
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._login_lock = threading.Lock()
        self._http = httpx.Client(
            base_url=url + API_PREFIX,
            timeout=timeout,
            headers={"User-Agent": f"ipacs-client/{__version__}", "Accept": "application/json"},
            transport=http_transport,
        )
        if session:
            self._http.cookies.set(SESSION_COOKIE, session, domain=urlsplit(url).hostname or "")

    def close(self) -> None:
        self._http.close()

    @property
    def session_token(self) -> str | None:
        for cookie in self._http.cookies.jar:
            if cookie.name == SESSION_COOKIE:
                return cookie.value
        return None

    def forget_session(self) -> None:
        self._http.cookies.clear()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        body: Callable[[], Body] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        timeout: httpx.Timeout | float | None = None,
    ) -> httpx.Response:
        """Send with retries; raise the server's error as an ApiError. `body` makes a fresh body per try."""
        with self.stream(
            method,
            path,
            params=params,
            json=json,
            body=body,
            headers=headers,
            idempotent=idempotent,
            timeout=timeout,
        ) as response:
            response.read()
            return response

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        body: Callable[[], Body] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        timeout: httpx.Timeout | float | None = None,
    ) -> Iterator[httpx.Response]:
        """Like `request`, but the answer's body is read by the caller (downloads)."""
        safe = method.upper() in IDEMPOTENT_METHODS if idempotent is None else idempotent

        def build(basic: bool) -> httpx.Request:
            extra = dict(headers or {})
            if basic and self.username is not None and self._password is not None:
                extra["Authorization"] = basic_header(self.username, self._password)
            request = self._http.build_request(
                method,
                path,
                params=params,
                json=json,
                content=body() if body is not None else None,
                headers=extra,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
            return request

        response = self._send(build, safe)
        try:
            if response.is_error:
                raise error_from_response(response)
            yield response
        finally:
            response.close()

    def _send(self, build: Callable[[bool], httpx.Request], safe: bool) -> httpx.Response:
        if self.session_token is None and self._password is not None:
            # The first request logs in; the others wait for its session cookie
            # instead of each opening a session of their own.
            with self._login_lock:
                if self.session_token is None:
                    return self._send_with_retries(build, True, safe)
        response = self._send_with_retries(build, False, safe)
        if response.status_code == 401 and self._password is not None:
            response.close()
            with self._login_lock:
                self.forget_session()  # it ended: log in again
                return self._send_with_retries(build, True, safe)
        if response.status_code == 401 and self.session_token is not None:
            response.close()
            raise Unauthorized("The session has ended (idle or expired): run `ipacs login` again", status=401)
        return response

    def _send_with_retries(
        self, build: Callable[[bool], httpx.Request], basic: bool, safe: bool
    ) -> httpx.Response:
        attempt = 0
        while True:
            request = build(basic)
            try:
                response = self._http.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                failure: Exception = exc
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadTimeout) as exc:
                if not safe:
                    raise ConnectionFailed(
                        f"{request.method} {request.url}: connection lost before the answer ({exc}); "
                        "not retried, as the request may have been carried out"
                    ) from exc
                failure = exc
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.retry.retries:
                    return response
                retry_after = response.headers.get("retry-after")
                response.close()
                self._sleep(self.retry.delay(attempt, retry_after))
                attempt += 1
                continue
            if attempt >= self.retry.retries:
                raise ConnectionFailed(
                    f"{request.method} {request.url}: {str(failure) or type(failure).__name__} "
                    f"(after {attempt + 1} attempts)"
                ) from failure
            self._sleep(self.retry.delay(attempt))
            attempt += 1

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params).json()

    def get_model(self, model: type[M], path: str, params: Mapping[str, Any] | None = None) -> M:
        response = self.request("GET", path, params=params)
        return with_etag(model.model_validate(response.json()), response)

    def iter_list(
        self, model: type[M], path: str, params: Mapping[str, Any] | None = None, page_size: int = MAX_PAGE
    ) -> Iterator[M]:
        """Every item of a list, page after page, following the `Link: rel="next"` header."""
        url: str | None = path
        query: dict[str, Any] | None = {**(params or {}), "limit": page_size}
        while url is not None:
            response = self.request("GET", url, params=query)
            for item in response.json():
                yield model.model_validate(item)
            url = response.links.get("next", {}).get("url")
            query = None  # the next link carries every parameter


def basic_header(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def with_etag(model: M, response: httpx.Response) -> M:
    """Attach the answer's ETag to a client model that has an `etag` field."""
    etag = response.headers.get("etag")
    if etag is not None and "etag" in type(model).model_fields:
        model.etag = etag  # type: ignore[attr-defined]
    return model
