"""ASGI middleware: the session cookie, security headers, body-size limit and URL guard."""

from __future__ import annotations

from urllib.parse import parse_qsl

import anyio
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ipacs.config import Settings
from ipacs.errors import InvalidRequest, IpacsError, NotFound, PayloadTooLarge, error_response

SESSION_COOKIE = "ipacs_session"


class SessionCookieMiddleware:
    """Sets `ipacs_session` on any response whose request opened a session.

    Done here rather than in the endpoint so it also reaches streamed and
    error responses, however the endpoint built its response.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.secure = settings.cookie_secure
        self.max_age = settings.session_absolute_lifetime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                token = scope.get("state", {}).get("new_session_token")
                if token:
                    headers = MutableHeaders(scope=message)
                    cookie = (
                        f"{SESSION_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={self.max_age}"
                    )
                    if self.secure:
                        cookie += "; Secure"
                    headers.append("set-cookie", cookie)
            await send(message)

        await self.app(scope, receive, send_with_cookie)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("x-frame-options", "DENY")
                headers.setdefault("referrer-policy", "no-referrer")
                if path.endswith("/docs"):
                    headers.setdefault(
                        "content-security-policy",
                        "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
                        "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: "
                        "https://fastapi.tiangolo.com; connect-src 'self'; frame-ancestors 'none'",
                    )
                else:
                    headers.setdefault(
                        "content-security-policy", "default-src 'none'; frame-ancestors 'none'"
                    )
                    headers.setdefault("cache-control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimitMiddleware:
    """Refuses bodies over the limit with 413, by Content-Length or while streaming,
    and bodies that stall (no data for `idle_timeout` seconds) with 408, so that a
    slow client cannot hold a worker by trickling a JSON body.

    Paths ending in one of `exempt_suffixes` (DICOM uploads) or starting with
    one of `exempt_prefixes` (DICOMweb, whose STOW-RS path ends in `/studies`
    like JSON routes do) enforce their own, larger limit.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        exempt_suffixes: tuple[str, ...] = (),
        exempt_prefixes: tuple[str, ...] = (),
        idle_timeout: float = 60.0,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self.exempt = exempt_suffixes
        self.exempt_prefixes = exempt_prefixes

    def _exempt(self, path: str) -> bool:
        return bool(self.exempt and path.endswith(self.exempt)) or bool(
            self.exempt_prefixes and path.startswith(self.exempt_prefixes)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or self._exempt(path):
            await self.app(scope, receive, send)
            return
        message = f"Request body exceeds {self.max_bytes} bytes"
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await error_response(PayloadTooLarge(message))(scope, receive, send)
            return
        received = 0
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body, receive() waits for a disconnect: no deadline
                return await receive()
            try:
                with anyio.fail_after(self.idle_timeout):
                    msg = await receive()
            except TimeoutError:
                stalled = f"The request body stalled: no data for {self.idle_timeout:g} seconds"
                raise HTTPException(status_code=408, detail=stalled) from None
            if msg["type"] == "http.request":
                complete = not msg.get("more_body", False)
                received += len(msg.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body parsing
                    # untouched and is rendered by the error handler as 413.
                    raise HTTPException(status_code=413, detail=message)
            return msg

        await self.app(scope, limited_receive, send)


class UriTooLong(IpacsError):
    status = 414
    code = "invalid_request"


class UrlGuardMiddleware:
    """Refuses, before routing, URLs no client of this API sends: a query string over
    `max_query_bytes` (414), a NUL character in a query parameter (400 naming it) or in the
    path (404: nothing has such a name). PostgreSQL cannot even compare text with a NUL, and
    SQLite would; both databases now see neither."""

    def __init__(self, app: ASGIApp, max_query_bytes: int) -> None:
        self.app = app
        self.max_query_bytes = max_query_bytes

    def _refusal(self, path: str, query: bytes) -> IpacsError | None:
        if len(query) > self.max_query_bytes:
            return UriTooLong(f"The query string exceeds {self.max_query_bytes} bytes")
        if "\x00" in path:
            return NotFound("No such resource")
        if b"%00" in query or b"\x00" in query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            fields = [key for key, value in pairs if "\x00" in key + value] or ["query"]
            return InvalidRequest(
                f"Invalid request: {', '.join(fields)}",
                [{"field": field, "message": "NUL characters (%00) are not allowed"} for field in fields],
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = self._refusal(scope.get("path", ""), scope.get("query_string", b""))
        if error is not None:
            await error_response(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)
