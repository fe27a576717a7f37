"""The request-scoped dependencies every endpoint takes: the caller and the DB session.

The transaction belongs to the edge: it commits when the endpoint returns and
rolls back when it raises. `scope="function"` makes the commit happen before
the response is sent, so a client never sees success for a lost write.

Both are `async def`, and send only their blocking part (the credential check,
the end of the transaction) to the thread pool: FastAPI runs every plain `def`
dependency there, and on a short GET each trip through the pool (a thread
wake-up, a GIL hand-over, a loop wake-up) cost as much as a query.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from ipacs.api.middleware import SESSION_COOKIE
from ipacs.auth.caller import Caller
from ipacs.auth.service import Authenticator
from ipacs.db.engine import Database
from ipacs.errors import PermissionDenied, Unauthorized

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _parse_basic(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthorized("Malformed Basic credentials") from exc
    username, sep, password = decoded.partition(":")
    if not sep or not username:
        raise Unauthorized("Malformed Basic credentials")
    return username, password


async def get_caller(request: Request) -> Caller:
    """Resolve Basic credentials or the session cookie; set a cookie for new sessions."""
    authenticator: Authenticator = request.app.state.authenticator
    cookie = request.cookies.get(SESSION_COOKIE)
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise Unauthorized("Only HTTP Basic authentication is supported")
        username, password = _parse_basic(value)
        result = await run_in_threadpool(
            authenticator.from_basic, username, password, client_address(request), cookie
        )
        # Browsers re-send Basic credentials they were once given, cross-site too.
        _refuse_cross_site(request)
        if result.new_session_token:
            request.state.new_session_token = result.new_session_token
        request.state.caller = result.caller
        return result.caller
    if cookie:
        caller = await run_in_threadpool(authenticator.from_session, cookie)
        if caller is not None:
            _refuse_cross_site(request)
            request.state.caller = caller
            return caller
    raise Unauthorized()


def _refuse_cross_site(request: Request) -> None:
    """CSRF: a browser sends the cookie (and Basic credentials it cached) on cross-site
    requests too, but also their Origin.

    An unsafe request, authenticated by cookie or by Basic, that carries an
    Origin must come from this server's own origin or one listed in
    IPACS_ALLOWED_ORIGINS. Scripts that send no Origin header (curl, Python)
    are not affected.
    """
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is None:
        return
    own = f"{request.url.scheme}://{request.url.netloc}"
    allowed = request.app.state.settings.allowed_origins
    if origin.rstrip("/") != own and origin.rstrip("/") not in allowed:
        raise PermissionDenied(f"Cross-site request from {origin} refused")


def _commit(session: Session) -> None:
    try:
        session.commit()
    finally:
        session.close()


def _roll_back(session: Session) -> None:
    try:
        session.rollback()
    finally:
        session.close()


# SQLite has one writer. A request that holds its write lock needs a worker thread
# again before it can commit (FastAPI validates a sync endpoint's response in the pool
# before dependencies exit): if every thread waited in BEGIN IMMEDIATE, none would be
# left for it. So a process's write requests queue here, without holding threads,
# and at most one waits in SQLite; other processes' writers are bounded by its busy
# timeout. One gate per event loop: a server process has one.
_write_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _write_gate() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    gate = _write_gates.get(loop)
    if gate is None:
        gate = _write_gates[loop] = asyncio.Lock()
    return gate


async def get_db(request: Request) -> AsyncIterator[Session]:
    database: Database = request.app.state.database
    write = request.method not in SAFE_METHODS
    async with _write_gate() if write and database.is_sqlite else contextlib.nullcontext():
        # Making a session does no I/O: its connection is taken on first use, in the endpoint's thread.
        session = database.session(write=write)
        # The transaction's end runs outside the request pool, as FastAPI runs the exit of a
        # plain `def` dependency, so that it never waits for a thread while holding locks.
        end = anyio.CapacityLimiter(1)
        try:
            yield session
        except BaseException:
            await anyio.to_thread.run_sync(_roll_back, session, limiter=end)
            raise
        await anyio.to_thread.run_sync(_commit, session, limiter=end)


CurrentUser = Annotated[Caller, Depends(get_caller)]
SessionDep = Annotated[Session, Depends(get_db, scope="function")]
