"""Refuse request bodies larger than ``server.max_request_body_bytes`` with a 413."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from blacksheep import Content, Request, Response

from toolkit.api.http.errors import APIError
from toolkit.api.http.render import error_response

Handler = Callable[[Request], Awaitable[Response]]
Middleware = Callable[[Request, Handler], Awaitable[Response]]


def too_large(limit: int) -> Response:
    """The OpenAI-shaped 413."""
    return error_response(APIError(f"The request body is larger than {limit} bytes",
                                   status=413, code="request_too_large"))


async def _read_bounded(request: Request, limit: int) -> bytes | None:
    """The streamed body, or None as soon as it grows past ``limit``."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def _known_length(request: Request) -> int | None:
    """The body's length when known before reading it: Content-Length, or the size of a
    body already in memory; None for a chunked body."""
    value = request.get_first_header(b"Content-Length")
    if value is not None and value.strip().isdigit():
        return int(value)
    length = getattr(request.content, "length", -1)
    return length if length >= 0 else None


def body_limit_middleware(limit: int | None) -> Middleware | None:
    """A middleware enforcing ``limit``: a declared Content-Length is checked before the
    body is read; a chunked body is read up to the limit. None when there is no limit."""
    if limit is None:
        return None

    async def limit_body(request: Request, handler: Handler) -> Response:
        known = _known_length(request)
        if known is not None:
            if known > limit:
                return too_large(limit)
        elif request.content is not None:
            data = await _read_bounded(request, limit)
            if data is None:
                return too_large(limit)
            content_type = request.content_type() or b"application/json"
            request.with_content(Content(content_type, data))
        return await handler(request)

    return limit_body
