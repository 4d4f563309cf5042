"""Pydantic bodies and event streams -> BlackSheep responses (JSON, errors, SSE)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

from blacksheep import Content, Request, Response
from blacksheep.server.sse import ServerSentEventsResponse, TextServerSentEvent
from pydantic import BaseModel

from toolkit.api.http.disconnect import client_gone
from toolkit.api.http.errors import APIError

logger = logging.getLogger(__name__)

_JSON = b"application/json"

DISCONNECT_CHECK_INTERVAL_S = 0.1
"""How often a stream asks whether its client is still there: on its first event, then on
the first event after each interval. BlackSheep's check is a task and a read of the request
stream; asked on every event it was about a sixth of the event loop's Python time at 64
streams, and the loop runs beside the engine's threads on a small CPU."""


def json_response(body: BaseModel | dict, status: int = 200) -> Response:
    """A JSON response from a pydantic model or a plain dict."""
    if isinstance(body, BaseModel):
        data = body.model_dump_json().encode()
    else:
        data = json.dumps(body, separators=(",", ":")).encode()
    return Response(status, None, Content(_JSON, data))


def error_response(error: APIError, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    """The OpenAI-shaped JSON response of an ``APIError``."""
    response = json_response(error.body(), error.status)
    for name, value in headers or ():
        response.add_header(name, value)
    return response


def sse_response(request: Request, events: AsyncIterator[str]) -> Response:
    """Stream JSON strings as ``data:`` events, then ``data: [DONE]``.

    Stops (and closes ``events``, which aborts the generation) when the client goes away
    (checked at most every DISCONNECT_CHECK_INTERVAL_S, on an event). An ``APIError``
    raised mid-stream is sent as an ``{"error": ...}`` event before ``[DONE]``.
    """

    async def provider() -> AsyncIterator[TextServerSentEvent]:
        next_check = 0.0
        try:
            async for data in events:
                if time.monotonic() >= next_check:
                    if await client_gone(request):
                        logger.info("client disconnected; aborting the stream")
                        return
                    next_check = time.monotonic() + DISCONNECT_CHECK_INTERVAL_S
                yield TextServerSentEvent(data)
        except APIError as exc:
            yield TextServerSentEvent(json.dumps(exc.body()))
        finally:
            await events.aclose()
        yield TextServerSentEvent("[DONE]")

    return ServerSentEventsResponse(provider)
