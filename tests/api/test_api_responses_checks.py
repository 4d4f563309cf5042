"""Helpers (no tests) for the Responses API tests: the SSE framing of typed events and
validation of bodies and events against the openai SDK's own pydantic models."""

from __future__ import annotations

import json
from typing import Any, get_args

from api_client import Reply
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

EVENT_ADAPTER = TypeAdapter(ResponseStreamEvent)
"""Validates any stream event the SDK knows."""
EVENT_CLASSES = {cls.model_fields["type"].annotation.__args__[0]: cls
                 for cls in get_args(get_args(ResponseStreamEvent)[0])}
"""Event type -> the SDK's class for it."""


def sdk_response(body: dict) -> Response:
    """``body`` validated as the SDK's ``Response`` (and round-tripped to the same
    output text)."""
    response = Response.model_validate(body)
    assert response.id == body["id"] and response.object == "response"
    return response


def sdk_event(data: dict) -> Any:
    """One event validated through the SDK's event union; it must land on the class
    its type names."""
    event = EVENT_ADAPTER.validate_python(data)
    assert type(event) is EVENT_CLASSES[data["type"]], (type(event), data["type"])
    if "response" in data:
        sdk_response(data["response"])
    return event


def sse_events(reply: Reply) -> list[dict]:
    """The events of a Responses stream: frames of ``event: <type>`` and ``data: <json>``
    whose type matches, numbered 0, 1, 2 ... by sequence_number, each valid for the SDK;
    no ``[DONE]``."""
    assert reply.status == 200, reply.text
    assert reply.content_type.startswith("text/event-stream"), reply.content_type
    events = []
    for frame in reply.text.strip("\n").split("\n\n"):
        lines = frame.split("\n")
        assert len(lines) == 2, frame
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        data = json.loads(lines[1][len("data: "):])
        assert data["type"] == lines[0][len("event: "):]
        sdk_event(data)
        events.append(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def event_types(events: list[dict]) -> list[str]:
    """The types, with runs of the same delta type collapsed to one."""
    types: list[str] = []
    for event in events:
        if not (event["type"].endswith(".delta") and types and types[-1] == event["type"]):
            types.append(event["type"])
    return types


def output_text(body: dict) -> str:
    """The text of a Response body's message items."""
    return "".join(part["text"] for item in body["output"] if item["type"] == "message"
                   for part in item["content"])
