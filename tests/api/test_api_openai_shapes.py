"""OpenAI-shaped answers for SDK clients (openai, openai-agents, pydantic-ai, langchain,
instructor), fast: the app over the scripted ``FakeEngine``, called through the official
openai client where it matters.

tools with response_format, a forced ``required`` call cut off by max_tokens,
``GET /v1/models/{model}``, error ``type``s, no empty ``tool_calls``, ``dimensions``.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from api_client import assert_error
from fake_engine import FakeEngine

from toolkit.api.app import build_app
from toolkit.config.schema import ServerConfig

CHAT = "/v1/chat/completions"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"]}
TIME = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
        "required": ["zone"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": TIME}}]
ANSWER = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
          "required": ["answer"]}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "reply", "schema": ANSWER}}
CALL = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
        '"unit": "celsius"}}\n</tool_call>')
REPLY = '{"answer": "yes"}'
FORCED = '[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]'
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]


def chat(**fields) -> dict:
    return {"model": "fake", "messages": MESSAGES, "max_tokens": 200, **fields}


def streamed(reply) -> tuple[str, dict[int, list[dict]], str | None]:
    """Content, tool-call deltas by index and the finish reason of an SSE reply."""
    content, calls, reason = "", {}, None
    for chunk in reply.chunks():
        for choice in chunk["choices"]:
            content += choice["delta"].get("content") or ""
            for delta in choice["delta"].get("tool_calls") or ():
                calls.setdefault(delta["index"], []).append(delta)
            reason = choice["finish_reason"] or reason
    return content, calls, reason


def joined(deltas: list[dict]) -> tuple[str, str]:
    """Name and arguments of one streamed call (the first delta has id, type and name)."""
    assert deltas[0]["id"].startswith("call_") and deltas[0]["type"] == "function"
    assert all("name" not in d["function"] for d in deltas[1:])
    return deltas[0]["function"]["name"], "".join(d["function"]["arguments"] for d in deltas)


@pytest.fixture
def fake_engine():
    """A context wide enough for the tools system prompt in byte tokens."""
    return FakeEngine(max_model_len=4096)


@pytest.fixture
async def sdk(fake_engine):
    """The official openai client over the app (ASGI, no socket) serving two names."""
    app = build_app(fake_engine, ServerConfig(served_model_name=["org/fake-1", "fake"]))
    await app.start()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    client = openai.AsyncOpenAI(base_url="http://test/v1", api_key="unused", max_retries=0,
                                http_client=http)
    yield client
    await client.close()
    await app.stop()


# ------------------------------------------------------- tools with response_format

@pytest.mark.parametrize("stream", [False, True])
async def test_tools_with_response_format_answer_a_call(fake_engine, fake_api, stream):
    fake_engine.script = CALL
    reply = await fake_api.post(CHAT, chat(tools=TOOLS, response_format=SCHEMA_FORMAT,
                                           stream=stream))
    assert reply.status == 200, reply.text
    guided = fake_engine.requests[-1].params.guided
    assert guided.kind == "structural_tag" and guided.param == "response_format.json_schema"
    if stream:
        content, calls, reason = streamed(reply)
        name, arguments = joined(calls[0])
        assert content == "" and list(calls) == [0]
    else:
        choice = reply.json()["choices"][0]
        reason, message = choice["finish_reason"], choice["message"]
        assert message["content"] is None and len(message["tool_calls"]) == 1
        name, arguments = (message["tool_calls"][0]["function"][k] for k in ("name", "arguments"))
    assert reason == "tool_calls" and name == "get_weather"
    assert json.loads(arguments) == {"city": "Paris", "unit": "celsius"}


@pytest.mark.parametrize("stream", [False, True])
async def test_tools_with_response_format_answer_in_the_schema(fake_engine, fake_api, stream):
    fake_engine.script = REPLY
    reply = await fake_api.post(CHAT, chat(tools=TOOLS, response_format=SCHEMA_FORMAT,
                                           stream=stream))
    if stream:
        content, calls, reason = streamed(reply)
        assert calls == {}
    else:
        choice = reply.json()["choices"][0]
        content, reason = choice["message"]["content"], choice["finish_reason"]
        assert "tool_calls" not in choice["message"]
    assert json.loads(content) == {"answer": "yes"} and reason == "stop"


@pytest.mark.parametrize("tool_choice", [
    "required", {"type": "function", "function": {"name": "get_time"}}])
async def test_a_forced_tool_choice_wins_over_response_format(fake_engine, fake_api,
                                                              tool_choice):
    fake_engine.script = (FORCED if tool_choice == "required" else '{"zone": "UTC"}')
    reply = await fake_api.post(CHAT, chat(tools=TOOLS, response_format=SCHEMA_FORMAT,
                                           tool_choice=tool_choice))
    assert reply.status == 200, reply.text
    assert fake_engine.requests[-1].params.guided.param == "tools"
    assert reply.json()["choices"][0]["finish_reason"] == "tool_calls"


async def test_a_forced_tool_choice_with_a_guided_field_is_a_400(fake_api):
    reply = await fake_api.post(CHAT, chat(tools=TOOLS, tool_choice="required",
                                           guided_regex="a+"))
    assert_error(reply, 400, type_="invalid_request_error", param="tool_choice")


# ------------------------------------------------- a required call cut by max_tokens

def _cut(engine: FakeEngine, text: str) -> int:
    """max_tokens that ends the output right after ``text`` (a prefix of the script)."""
    return len(engine.tokenizer.encode(text, add_special_tokens=False))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("cut, name, arguments", [
    ('[{"name": "get_weather", "arguments": {"city": "Pa', "get_weather", '{"city": "Pa'),
    ('[{"name": "get_weather", "argu', "get_weather", ""),
    ('[{"name": "get_w', "get_weather", ""),  # the one tool the name can be
])
async def test_a_required_call_cut_short_is_a_partial_call(fake_engine, fake_api, stream,
                                                           cut, name, arguments):
    fake_engine.script = FORCED
    reply = await fake_api.post(CHAT, chat(tools=TOOLS, tool_choice="required", stream=stream,
                                           max_tokens=_cut(fake_engine, cut)))
    if stream:
        content, calls, reason = streamed(reply)
        assert content == "" and list(calls) == [0]
        assert joined(calls[0]) == (name, arguments)
    else:
        choice = reply.json()["choices"][0]
        reason, message = choice["finish_reason"], choice["message"]
        assert message["content"] is None
        call = message["tool_calls"][0]
        assert call["id"].startswith("call_") and call["type"] == "function"
        assert (call["function"]["name"], call["function"]["arguments"]) == (name, arguments)
    assert reason == "length"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_required_call_cut_before_its_name_is_known_has_no_call(fake_engine, fake_api,
                                                                        stream):
    """'get_' could be either tool: no call, and no raw JSON as content either."""
    fake_engine.script = FORCED
    reply = await fake_api.post(CHAT, chat(tools=TOOLS, tool_choice="required", stream=stream,
                                           max_tokens=_cut(fake_engine, '[{"name": "get_')))
    if stream:
        content, calls, reason = streamed(reply)
    else:
        choice = reply.json()["choices"][0]
        content, reason = choice["message"]["content"], choice["finish_reason"]
        calls = choice["message"].get("tool_calls", {})
    assert content == "" and not calls and reason == "length"


async def test_second_required_call_cut_short_streams_after_the_first(fake_engine, fake_api):
    fake_engine.script = FORCED[:-1] + ', {"name": "get_time", "arguments": {"zone": "UTC"}}]'
    cut = FORCED[:-1] + ', {"name": "get_t'
    reply = await fake_api.post(CHAT, chat(tools=TOOLS, tool_choice="required", stream=True,
                                           max_tokens=_cut(fake_engine, cut)))
    _, calls, reason = streamed(reply)
    assert [joined(calls[i])[0] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert json.loads(joined(calls[0])[1]) == {"city": "Paris", "unit": "celsius"}
    assert joined(calls[1])[1] == "" and reason == "length"


# ------------------------------------------------------------------ GET /v1/models/{id}

async def test_models_retrieve_through_the_sdk(sdk):
    for name in ("org/fake-1", "fake"):
        card = await sdk.models.retrieve(name)
        assert card.id == name and card.object == "model" and card.owned_by == "toolkit"
        assert card.model_extra["root"] == "fake" and card.model_extra["max_model_len"] == 4096
        assert card.model_extra["parent"] is None
    listed = [m.id async for m in sdk.models.list()]
    assert listed == ["org/fake-1", "fake"]
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.models.retrieve("gpt-4o")
    assert caught.value.body == {"message": "The model `gpt-4o` does not exist.",
                                 "type": "not_found_error", "param": "model",
                                 "code": "model_not_found"}


async def test_models_retrieve_over_plain_http(fake_api):
    reply = await fake_api.get("/v1/models/fake")
    assert reply.status == 200 and reply.json()["id"] == "fake"
    assert_error(await fake_api.get("/v1/models/nope"), 404, type_="not_found_error",
                 param="model", code="model_not_found")


# ------------------------------------------------------------------------ error types

async def test_error_types_are_openais(fake_engine, fake_api, fake_served):
    assert_error(await fake_api.post(CHAT, chat(temperature=-1)), 400,
                 type_="invalid_request_error")
    assert_error(await fake_api.post(CHAT, chat(model="nope")), 404, type_="not_found_error")
    assert_error(await fake_api.get("/v1/nope"), 404, type_="not_found_error")
    assert_error(await fake_api.get(CHAT), 405, type_="invalid_request_error")
    locked = await fake_served(fake_engine, api_keys=["secret"])
    assert_error(await locked.post(CHAT, chat()), 401, type_="authentication_error")
    fake_engine.healthy = False
    assert_error(await fake_api.post(CHAT, chat()), 503, type_="server_error")


async def test_sdk_errors_carry_openais_type(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(model="fake", messages=MESSAGES, temperature=-1)
    assert caught.value.body["type"] == "invalid_request_error"
    assert caught.value.type == "invalid_request_error"


# ----------------------------------------------------------- no empty tool_calls list

async def test_a_plain_reply_has_no_tool_calls_field(fake_api, sdk):
    for fields in ({}, {"tools": TOOLS}):
        message = (await fake_api.post(CHAT, chat(**fields))).json()["choices"][0]["message"]
        assert "tool_calls" not in message and message["content"]
    reply = await sdk.chat.completions.create(model="fake", messages=MESSAGES, tools=TOOLS)
    assert reply.choices[0].message.tool_calls is None


# ----------------------------------------------------------------------- dimensions

async def test_dimensions_equal_to_the_width_are_accepted(fake_engine, fake_api, sdk):
    width = fake_engine.hidden_size
    reply = await fake_api.post("/v1/embeddings", {"input": "hi", "dimensions": width})
    assert reply.status == 200 and len(reply.json()["data"][0]["embedding"]) == width
    vectors = await sdk.embeddings.create(model="fake", input=["hi"], dimensions=width)
    assert len(vectors.data[0].embedding) == width
    for dimensions in (width - 1, width * 2, 0):
        reply = await fake_api.post("/v1/embeddings", {"input": "hi", "dimensions": dimensions})
        assert_error(reply, 400, type_="invalid_request_error", param="dimensions")
