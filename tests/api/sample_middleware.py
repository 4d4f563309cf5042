"""A middleware loaded by import path in the server-option tests."""

from __future__ import annotations


async def tag_response(request, handler):
    """Add ``X-Toolkit-Test: 1`` to every response."""
    response = await handler(request)
    response.add_header(b"X-Toolkit-Test", b"1")
    return response
