"""Noticing that an HTTP client went away, so its generation can be aborted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from blacksheep import Request

from toolkit.api.http.errors import APIError

T = TypeVar("T")

POLL_INTERVAL_S = 0.5
"""How often a non-streamed request checks whether its client is still connected."""


async def client_gone(request: Request) -> bool:
    """True once the client has disconnected; False where that cannot be told (TestClient)."""
    try:
        return await request.is_disconnected()
    except TypeError:
        return False


async def wait_disconnected(request: Request, stop: asyncio.Event,
                            interval: float = POLL_INTERVAL_S) -> None:
    """Return once the client has disconnected or ``stop`` is set.

    Stopping takes ``stop``, not cancellation: BlackSheep's ``is_disconnected`` swallows a
    cancellation that lands while it runs, so a cancelled poller could poll on forever.
    """
    while not stop.is_set():
        if await client_gone(request):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first.

    Cancelling a generation closes its engine streams, which aborts the requests there.
    Raises ``APIError`` (499, client closed request) in that case; nobody reads it.
    """
    stop = asyncio.Event()
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_disconnected(request, stop))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if task.cancelled():
        raise APIError("The client closed the request", status=499, code="client_closed")
    return task.result()
