"""POST/GET/DELETE /v1/responses over the real SmolLM2: bodies and every stream event are
validated against the openai SDK's own models; the output matches the chat path's."""

from __future__ import annotations

import json

import jsonschema
import pytest
from api_client import MODEL, assert_error, open_client
from test_api_responses_checks import event_types, output_text, sdk_response, sse_events

from toolkit.config.schema import ChatConfig, ServerConfig

RESPONSES = "/v1/responses"
WEATHER = {"type": "object",
           "properties": {"city": {"type": "string", "maxLength": 12},
                          "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"]}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather now",
          "parameters": WEATHER}]
PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 10},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}
PERSON_FORMAT = {"format": {"type": "json_schema", "name": "person", "schema": PERSON,
                            "strict": True}}
TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added", "response.output_text.delta",
               "response.output_text.done", "response.content_part.done",
               "response.output_item.done"]
"""A one-message stream, before its last event."""


def body(**fields) -> dict:
    """A greedy request with a small budget; keyword fields merge in."""
    return {"model": MODEL, "input": "Write a long story about a dragon.",
            "max_output_tokens": 8, "temperature": 0, **fields}


async def create(api, **fields) -> dict:
    reply = await api.post(RESPONSES, body(**fields))
    assert reply.status == 200, reply.text
    sdk_response(reply.json())
    return reply.json()


async def test_text_response_is_cut_at_max_output_tokens(api):
    result = await create(api, instructions="You are terse.")
    assert result["id"].startswith("resp_") and result["model"] == MODEL
    assert result["status"] == "incomplete"
    assert result["incomplete_details"] == {"reason": "max_output_tokens"}
    usage = result["usage"]
    assert usage["output_tokens"] == 8 and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    [message] = result["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["status"] == "incomplete" and output_text(result)
    assert result["instructions"] == "You are terse." and result["max_output_tokens"] == 8


async def test_same_prompt_and_text_as_chat_completions(api):
    """The input items render through the chat template exactly as the chat messages do,
    and greedy decoding gives the chat completion's text."""
    items = [
        {"role": "developer", "content": "Answer in one sentence."},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Name a color."}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Blue."}]},
        {"role": "user", "content": "Another one?"},
    ]
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Answer in one sentence."},
                {"role": "user", "content": "Name a color."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": "Another one?"}]
    result = await create(api, input=items, instructions="Be brief.", max_output_tokens=12)
    chat = (await api.post("/v1/chat/completions", {
        "model": MODEL, "messages": messages, "max_tokens": 12, "temperature": 0})).json()
    assert result["usage"]["input_tokens"] == chat["usage"]["prompt_tokens"]
    assert result["usage"]["output_tokens"] == chat["usage"]["completion_tokens"]
    assert output_text(result) == chat["choices"][0]["message"]["content"]


async def test_stream_events_in_order(api):
    reply = await api.post(RESPONSES, body(stream=True))
    events = sse_events(reply)
    assert event_types(events) == [*TEXT_EVENTS, "response.incomplete"]
    created, final = events[0]["response"], events[-1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert created["usage"] is None
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    item_id = events[2]["item"]["id"]
    assert all(e["item_id"] == item_id for e in events if "item_id" in e)
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert done["text"] == deltas == output_text(final)
    assert final["status"] == "incomplete" and final["usage"]["output_tokens"] == 8
    unstreamed = await create(api)
    assert output_text(unstreamed) == deltas
    stored = (await api.get(f"{RESPONSES}/{final['id']}")).json()
    assert stored == final


async def test_stream_that_stops_completes(api):
    reply = await api.post(RESPONSES, body(stream=True, max_output_tokens=60,
                                           guided_choice=["yes", "no"]))
    events = sse_events(reply)
    assert event_types(events) == [*TEXT_EVENTS, "response.completed"]
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["incomplete_details"] is None
    assert output_text(final) in ("yes", "no")


async def test_required_tool_call_and_round_trip(api):
    result = await create(api, input="What is the weather in Paris?", tools=TOOLS,
                          tool_choice="required", parallel_tool_calls=False,
                          max_output_tokens=60, temperature=1.0, seed=2)
    assert result["status"] == "completed"
    [call] = result["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert call["call_id"].startswith("call_") and call["id"].startswith("fc_")
    jsonschema.validate(json.loads(call["arguments"]), WEATHER)
    answer = {"type": "function_call_output", "call_id": call["call_id"],
              "output": '{"temperature_c": 21}'}
    follow = await create(api, input=[answer], previous_response_id=result["id"],
                          tools=TOOLS, max_output_tokens=10)
    assert follow["previous_response_id"] == result["id"]
    assert follow["output"][-1]["type"] in ("message", "function_call")
    assert follow["usage"]["input_tokens"] > result["usage"]["input_tokens"]
    stateless = await create(api, input=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {k: call[k] for k in ("type", "call_id", "name", "arguments")}, answer],
        tools=TOOLS, max_output_tokens=10)
    assert stateless["usage"]["input_tokens"] == follow["usage"]["input_tokens"]
    assert _shape(stateless) == _shape(follow)


def _shape(result: dict) -> list[tuple]:
    """The output without its fresh ids."""
    return [(item["type"], item.get("name"), item.get("arguments"),
             [part["text"] for part in item.get("content", [])]) for item in result["output"]]


async def test_named_tool_choice_streams_arguments(api):
    choice = {"type": "function", "name": "get_weather"}
    reply = await api.post(RESPONSES, body(input="Weather in Rome?", tools=TOOLS,
                                           tool_choice=choice, max_output_tokens=40,
                                           temperature=1.0, seed=1, stream=True))
    events = sse_events(reply)
    assert event_types(events) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    added = events[2]["item"]
    assert added["type"] == "function_call" and added["status"] == "in_progress"
    arguments = "".join(e["delta"] for e in events
                        if e["type"] == "response.function_call_arguments.delta")
    done = events[-3]
    assert done["arguments"] == arguments and done["name"] == "get_weather"
    jsonschema.validate(json.loads(arguments), WEATHER)
    [call] = events[-1]["response"]["output"]
    assert call["arguments"] == arguments and call["call_id"] == added["call_id"]
    assert events[-1]["response"]["tool_choice"] == choice


async def test_json_schema_text_format(api):
    result = await create(api, input="Invent a person.", text=PERSON_FORMAT,
                          max_output_tokens=60, temperature=1.0, seed=3)
    assert result["status"] == "completed", result
    jsonschema.validate(json.loads(output_text(result)), PERSON)
    assert result["text"]["format"]["schema"] == PERSON
    reply = await api.post(RESPONSES, body(input="Invent a person.", text=PERSON_FORMAT,
                                           max_output_tokens=60, temperature=1.0, seed=3,
                                           stream=True))
    events = sse_events(reply)
    assert output_text(events[-1]["response"]) == output_text(result)


async def test_reasoning_items(engine):
    """With server.chat.reasoning, <think> becomes a reasoning item (a regex makes the
    small model write one)."""
    app, api = await open_client(engine, ServerConfig(chat=ChatConfig(reasoning=True)))
    try:
        request = body(input="Think, then answer.", max_output_tokens=40, temperature=1.0,
                       guided_regex=r"<think>[a-z]{2,6}</think>[a-z]{2,6}")
        result = (await api.post(RESPONSES, request)).json()
        sdk_response(result)
        reasoning, message = result["output"]
        assert reasoning["type"] == "reasoning"
        assert reasoning["content"][0]["type"] == "reasoning_text"
        assert reasoning["content"][0]["text"].isalpha() and output_text(result).isalpha()
        events = sse_events(await api.post(RESPONSES, {**request, "stream": True}))
        types = event_types(events)
        assert types[2:8] == ["response.output_item.added", "response.content_part.added",
                              "response.reasoning_text.delta", "response.reasoning_text.done",
                              "response.content_part.done", "response.output_item.done"]
        assert types[8:] == [*TEXT_EVENTS[2:], "response.completed"]
        final = events[-1]["response"]
        assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    finally:
        await app.stop()


async def test_previous_response_and_store(api):
    first = await create(api, input="My name is Ada.", max_output_tokens=4)
    second = await create(api, input="What is my name?", previous_response_id=first["id"],
                          max_output_tokens=4)
    alone = await create(api, input="What is my name?", max_output_tokens=4)
    assert second["usage"]["input_tokens"] > alone["usage"]["input_tokens"] \
        + first["usage"]["output_tokens"]
    unstored = await create(api, store=False, max_output_tokens=2)
    assert unstored["store"] is False
    assert_error(await api.get(f"{RESPONSES}/{unstored['id']}"), 404, param="response_id")
    reply = await api.post(RESPONSES, body(previous_response_id=unstored["id"]))
    assert_error(reply, 404, param="previous_response_id", code="previous_response_not_found")
    deleted = (await api.request("DELETE", f"{RESPONSES}/{first['id']}")).json()
    assert deleted == {"id": first["id"], "object": "response.deleted", "deleted": True}
    assert_error(await api.get(f"{RESPONSES}/{first['id']}"), 404)
    assert_error(await api.request("DELETE", f"{RESPONSES}/{first['id']}"), 404)
    assert (await api.get(f"{RESPONSES}/{second['id']}")).json() == second
    cancel = await api.post(f"{RESPONSES}/{second['id']}/cancel", {})
    assert_error(cancel, 400, param="response_id")
    assert_error(await api.post(f"{RESPONSES}/resp_unknown/cancel", {}), 404)


async def test_store_is_bounded(engine):
    app, api = await open_client(engine, ServerConfig(chat=ChatConfig(
        responses_max_stored=2)))
    try:
        ids = [(await create(api, max_output_tokens=1))["id"] for _ in range(3)]
        assert_error(await api.get(f"{RESPONSES}/{ids[0]}"), 404)
        for response_id in ids[1:]:
            assert (await api.get(f"{RESPONSES}/{response_id}")).status == 200
    finally:
        await app.stop()


@pytest.mark.parametrize(("fields", "param"), [
    ({"input": [{"type": "bogus"}]}, "input[0]"),
    ({"input": []}, "input"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user"}]}, "input[0].content"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
     "input[0].arguments"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": 5}}}},
     "text.format.schema"),
    ({"max_output_tokens": 10**6}, "max_output_tokens"),
    ({"temperature": -1}, "temperature"),
    ({"background": True}, "background"),
    ({"truncation": "auto"}, "truncation"),
    ({"reasoning": {"effort": "high"}}, "reasoning.effort"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
])
async def test_bad_input_is_a_400_naming_the_param(api, fields, param):
    assert_error(await api.post(RESPONSES, body(**fields)), 400, param=param)


async def test_unknown_model_and_ids(api):
    assert_error(await api.post(RESPONSES, body(model="gpt-4o")), 404, param="model")
    error = assert_error(await api.get(f"{RESPONSES}/resp_nope"), 404)
    assert "resp_nope" in error["message"]
    assert_error(await api.request("DELETE", f"{RESPONSES}/resp_nope"), 404)


async def test_deadline_mid_stream_ends_with_an_error_event(engine):
    """Past server.request_timeout a started stream ends with a typed ``error`` event (a
    regex forces a long output); the response is not stored."""
    app, api = await open_client(engine, ServerConfig(request_timeout=1.0))
    try:
        reply = await api.post(RESPONSES, body(stream=True, max_output_tokens=1000,
                                               guided_regex=r"(dragon ){300}"))
        events = sse_events(reply)
        assert event_types(events)[:5] == TEXT_EVENTS[:5]
        assert events[-1]["type"] == "error" and events[-1]["code"] == "request_timeout"
        response_id = events[0]["response"]["id"]
        assert_error(await api.get(f"{RESPONSES}/{response_id}"), 404)
    finally:
        await app.stop()
