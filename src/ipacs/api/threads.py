"""The worker threads requests run their blocking work in.

Sync endpoints and the blocking part of dependencies share anyio's default
thread limiter, sized by IPACS_THREADS. DICOM uploads read their body in a
worker thread for as long as it takes to arrive, so they draw on a limiter of
their own (IPACS_CONCURRENT_UPLOADS): slow uploads cannot take every thread
from short requests, and the request pool can stay small.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
from starlette.requests import Request

from ipacs.config import Settings

T = TypeVar("T")


def configure(settings: Settings) -> anyio.CapacityLimiter:
    """Size the request pool; the uploads' limiter. Call inside the event loop (the lifespan)."""
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
    return anyio.CapacityLimiter(settings.concurrent_uploads)


async def run_upload(request: Request, func: Callable[..., T], *args: object) -> T:
    """`func(*args)` in a worker thread counted against the uploads' limiter."""
    limiter: anyio.CapacityLimiter = request.app.state.upload_limiter
    return await anyio.to_thread.run_sync(func, *args, limiter=limiter)
