"""Graceful shutdown: once draining, every new request is refused with a 503."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from blacksheep import Request, Response

from toolkit.api.http.errors import APIError, retry_after
from toolkit.api.http.render import error_response

Handler = Callable[[Request], Awaitable[Response]]
Middleware = Callable[[Request, Handler], Awaitable[Response]]


@dataclass(frozen=True)
class ShutdownGate:
    """Shared by the server (which starts draining on SIGTERM) and the app (which refuses
    new requests from then on; requests already admitted run to completion)."""

    draining: threading.Event = field(default_factory=threading.Event)
    """Set once shutdown has begun; set from a signal handler, read on every request."""

    def start_draining(self) -> None:
        """Refuse new requests from now on."""
        self.draining.set()


def drain_middleware(gate: ShutdownGate, retry_after_s: int) -> Middleware:
    """503 (``Connection: close``) for every request that arrives while draining."""

    async def refuse_while_draining(request: Request, handler: Handler) -> Response:
        if not gate.draining.is_set():
            return await handler(request)
        error = APIError("The server is shutting down", status=503, code="shutting_down")
        return error_response(error, [*retry_after(retry_after_s), (b"Connection", b"close")])

    return refuse_while_draining
