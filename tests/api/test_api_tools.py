"""Tool calling end to end with the official openai client: named, required, auto."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from api_client import MODEL

pytestmark = pytest.mark.slow

WEATHER = {"type": "object",
           "properties": {"city": {"type": "string", "maxLength": 12},
                          "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"]}
TIME = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET", "PST"]}},
        "required": ["zone"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time now",
                                      "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
async def client(base_url):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    yield client
    await client.close()


def _check_calls(calls, names=tuple(SCHEMAS)):
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


async def test_named_tool_choice(client):
    choice = {"type": "function", "function": {"name": "get_weather"}}
    reply = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice=choice, max_tokens=40,
        temperature=1.0, seed=1)
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    assert len(message.tool_calls) == 1
    _check_calls(message.tool_calls, ("get_weather",))


async def test_required_tool_choice(client):
    reply = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=60,
        temperature=1.0, seed=2, parallel_tool_calls=False)
    assert reply.choices[0].finish_reason == "tool_calls"
    assert len(reply.choices[0].message.tool_calls) == 1
    _check_calls(reply.choices[0].message.tool_calls)


async def test_auto_hermes_parses_calls(client):
    """auto: the hermes parser reads <tool_call> blocks; a regex makes the model emit one."""
    regex = (r'Let me check\.\n<tool_call>\n\{"name": "get_weather", "arguments": '
             r'\{"city": "(Paris|Rome)", "unit": "celsius"\}\}\n</tool_call>')
    reply = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, max_tokens=60, temperature=1.0,
        extra_body={"guided_regex": regex})
    message = reply.choices[0].message
    assert message.content == "Let me check."
    assert reply.choices[0].finish_reason == "tool_calls"
    _check_calls(message.tool_calls, ("get_weather",))
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, max_tokens=60, temperature=1.0,
        stream=True, extra_body={"guided_regex": regex})
    content, calls, reason = await _collect(stream)
    assert content.strip() == "Let me check." and reason == "tool_calls"
    assert list(calls) == [0]
    name, arguments = _streamed_call(calls[0])
    assert name == "get_weather"
    jsonschema.validate(json.loads(arguments), WEATHER)


async def test_required_tool_choice_streams_calls_token_by_token(client):
    """Each call's first delta carries index, id, type and name; argument fragments follow
    and join to the arguments of the same (greedy) request answered whole."""
    request = {"model": MODEL, "messages": MESSAGES, "tools": TOOLS,
               "tool_choice": "required", "max_tokens": 80, "temperature": 0,
               "parallel_tool_calls": False}
    whole = (await client.chat.completions.create(**request)).choices[0].message.tool_calls
    content, calls, reason = await _collect(
        await client.chat.completions.create(**request, stream=True))
    assert content == "" and reason == "tool_calls"
    assert list(calls) == list(range(len(whole))) and whole
    for index, call in enumerate(whole):
        name, arguments = _streamed_call(calls[index])
        assert name == call.function.name
        assert json.loads(arguments) == json.loads(call.function.arguments)
        jsonschema.validate(json.loads(arguments), SCHEMAS[name])


async def _collect(stream) -> tuple[str, dict[int, list], str | None]:
    """Content, the tool-call deltas by index, and the last finish_reason of a stream."""
    content, calls, reason = "", {}, None
    async for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for delta in choice.delta.tool_calls or ():
                calls.setdefault(delta.index, []).append(delta)
            reason = choice.finish_reason or reason
    return content, calls, reason


def _streamed_call(deltas: list) -> tuple[str, str]:
    """Name and joined arguments of one call's deltas, checking OpenAI's shape: the first
    delta has id, type and name; more than one later delta, with arguments only."""
    first, rest = deltas[0], deltas[1:]
    assert first.id.startswith("call_") and first.type == "function" and first.function.name
    assert len(rest) > 1
    for delta in rest:
        assert delta.id is None and delta.type is None and delta.function.name is None
        assert delta.function.arguments
    return first.function.name, "".join(d.function.arguments or "" for d in deltas)


async def test_named_tool_call_streams_arguments(client):
    choice = {"type": "function", "function": {"name": "get_time"}}
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice=choice, max_tokens=30,
        temperature=1.0, stream=True)
    name, arguments, ids, reason = "", "", set(), None
    async for chunk in stream:
        for c in chunk.choices:
            for delta in c.delta.tool_calls or ():
                assert delta.index == 0
                ids.add(delta.id) if delta.id else None
                name += delta.function.name or ""
                arguments += delta.function.arguments or ""
            reason = c.finish_reason or reason
    assert name == "get_time" and len(ids) == 1 and reason == "tool_calls"
    jsonschema.validate(json.loads(arguments), TIME)


async def test_tool_history_renders_through_the_template(client):
    history = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"},
    ]
    reply = await client.chat.completions.create(
        model=MODEL, messages=history, tools=TOOLS, tool_choice="none", max_tokens=8,
        temperature=0)
    assert reply.choices[0].message.content
    assert not reply.choices[0].message.tool_calls


async def test_named_tool_must_exist(client):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, tools=TOOLS, max_tokens=4,
            tool_choice={"type": "function", "function": {"name": "nope"}})
    assert caught.value.body["param"] == "tool_choice"


ANSWER = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
          "required": ["answer"]}
ANSWER_FORMAT = {"type": "json_schema", "json_schema": {"name": "reply", "schema": ANSWER}}
TIME_ONLY = [TOOLS[1]]
FIRST_TOKEN = {"call": "<", "answer": '{"'}
"""A first token only one branch may start with: biasing it picks that branch."""


@pytest.mark.parametrize("branch", ["call", "answer"])
@pytest.mark.parametrize("stream", [False, True])
async def test_tools_with_response_format_call_or_answer(client, engine, branch, stream):
    """tool_choice=auto with response_format: the grammar lets the model call a tool (in
    the hermes syntax) or answer in the schema; a logit bias on the first token of one
    branch makes the real model take it, and the rest follows the grammar."""
    [token] = engine.tokenizer.encode(FIRST_TOKEN[branch], add_special_tokens=False)
    request = {"model": MODEL, "messages": MESSAGES, "tools": TIME_ONLY,
               "response_format": ANSWER_FORMAT, "parallel_tool_calls": False,
               "max_tokens": 40, "temperature": 0, "logit_bias": {str(token): 100}}
    if stream:
        content, deltas, reason = await _collect(
            await client.chat.completions.create(**request, stream=True))
        calls = [_streamed_call(deltas[i]) for i in sorted(deltas)] if deltas else []
    else:
        choice = (await client.chat.completions.create(**request)).choices[0]
        content, reason = choice.message.content, choice.finish_reason
        calls = [(c.function.name, c.function.arguments)
                 for c in choice.message.tool_calls or ()]
    if branch == "call":
        assert reason == "tool_calls" and not content and len(calls) == 1
        assert calls[0][0] == "get_time"
        jsonschema.validate(json.loads(calls[0][1]), TIME)
    else:
        assert reason == "stop" and calls == []
        jsonschema.validate(json.loads(content), ANSWER)


@pytest.mark.parametrize("stream", [False, True])
async def test_required_call_cut_by_max_tokens_is_a_partial_call(client, stream):
    request = {"model": MODEL, "messages": MESSAGES, "tools": TOOLS,
               "tool_choice": "required", "max_tokens": 12, "temperature": 0}
    if stream:
        content, deltas, reason = await _collect(
            await client.chat.completions.create(**request, stream=True))
        first = deltas[0][0]
        name = first.function.name
        arguments = "".join(d.function.arguments or "" for d in deltas[0])
        assert first.id.startswith("call_") and content == ""
    else:
        choice = (await client.chat.completions.create(**request)).choices[0]
        reason, content = choice.finish_reason, choice.message.content
        [call] = choice.message.tool_calls
        name, arguments = call.function.name, call.function.arguments
        assert content is None
    assert reason == "length" and name in SCHEMAS
    whole = (await client.chat.completions.create(**{**request, "max_tokens": 80}))
    complete = whole.choices[0].message.tool_calls[0].function
    assert complete.name == name
    assert complete.arguments.startswith(arguments)
