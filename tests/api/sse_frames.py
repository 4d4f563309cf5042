"""Strict server-sent-event framing checks for the fast API tests."""

from __future__ import annotations

import json

from api_client import Reply


def sse_payloads(reply: Reply) -> list[str]:
    """The payloads of a 200 event stream whose body is exactly a sequence of
    ``data: <payload>\\n\\n`` events (one line each), ending with ``data: [DONE]``."""
    assert reply.status == 200, reply.text
    assert reply.content_type.startswith("text/event-stream"), reply.content_type
    assert reply.headers.get_first(b"cache-control") == b"no-cache"
    text = reply.text
    assert text.endswith("\n\n"), repr(text[-40:])
    frames = text[:-2].split("\n\n")
    for frame in frames:
        assert frame.startswith("data: "), repr(frame)
        assert "\n" not in frame and "\r" not in frame, repr(frame)
    payloads = [frame[len("data: "):] for frame in frames]
    assert payloads[-1] == "[DONE]"
    assert payloads.count("[DONE]") == 1
    return payloads


def sse_chunks(reply: Reply) -> list[dict]:
    """The JSON objects of a stream (``[DONE]`` checked and dropped)."""
    return [json.loads(payload) for payload in sse_payloads(reply)[:-1]]
