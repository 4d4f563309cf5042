"""The official openai SDK, unchanged, against the real server: chat (plain, streamed, the
``stream`` helper), structured outputs through ``parse`` with a pydantic model, tools
(``pydantic_function_tool``, a forced call -> tool result -> final answer, streamed
calls), and the Responses API (plain, streamed, ``parse``, a stateless tool round trip)."""

from __future__ import annotations

import json

import pytest

openai = pytest.importorskip("openai")

from client_helpers import (  # noqa: E402
    BUDGET,
    EMBEDDING_DIMS,
    MODEL,
    STORY,
    WEATHER_PARAMETERS,
    WEATHER_RESULT,
    WEATHER_TOOL,
    GetWeather,
    Person,
    WeatherAnswer,
    check_answer,
    check_person,
    check_weather_arguments,
)

pytestmark = pytest.mark.clients

NAMED = {"type": "function", "function": {"name": "get_weather"}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


def story(**fields):
    return {"model": MODEL, "messages": [{"role": "user", "content": STORY}],
            "max_tokens": 24, "temperature": 0, **fields}


# --- chat completions ---


def test_chat_stream_equals_plain(openai_client):
    plain = openai_client.chat.completions.create(**story())
    [choice] = plain.choices
    assert plain.model == MODEL and plain.object == "chat.completion"
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length" and not choice.message.tool_calls
    assert plain.usage.completion_tokens == 24
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + 24

    chunks = list(openai_client.chat.completions.create(
        **story(), stream=True, stream_options={"include_usage": True}))
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == "length" and not any(reasons[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


def test_chat_stream_helper(openai_client):
    # the helper refuses a completion cut by max_tokens: a stop string ends this one
    request = {"model": MODEL, "max_tokens": BUDGET, "temperature": 0, "stop": ["."],
               "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    plain = openai_client.chat.completions.create(**request)
    assert plain.choices[0].finish_reason == "stop"
    with openai_client.chat.completions.stream(**request) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    deltas = "".join(e.delta for e in events if e.type == "content.delta")
    [done] = [e for e in events if e.type == "content.done"]
    assert deltas == done.content == final.choices[0].message.content
    assert final.choices[0].message.content == plain.choices[0].message.content
    assert final.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("path", ["chat.completions", "beta.chat.completions"])
def test_parse_a_pydantic_model(openai_client, path):
    completions = openai_client
    for name in path.split("."):
        completions = getattr(completions, name)
    completion = completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Invent a person."}],
        response_format=Person, max_tokens=BUDGET, temperature=0)
    [choice] = completion.choices
    assert choice.finish_reason == "stop" and choice.message.refusal is None
    person = check_person(choice.message.parsed)
    assert json.loads(choice.message.content) == person.model_dump()


def test_parse_streamed_equals_plain(openai_client):
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Invent a person."}],
               "response_format": Person, "max_tokens": BUDGET, "temperature": 0}
    plain = openai_client.chat.completions.parse(**request).choices[0].message.parsed
    with openai_client.chat.completions.stream(**request) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    [done] = [e for e in events if e.type == "content.done"]
    assert check_person(done.parsed) == plain
    assert final.choices[0].message.parsed == plain


@pytest.mark.parametrize("tool_choice", [
    {"type": "function", "function": {"name": "GetWeather"}}, "required"])
def test_parse_a_pydantic_function_tool(openai_client, tool_choice):
    completion = openai_client.chat.completions.parse(
        model=MODEL, messages=ASK_WEATHER, tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice=tool_choice, parallel_tool_calls=False, max_tokens=BUDGET,
        temperature=0)
    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id and call.function.name == "GetWeather"
    arguments = call.function.parsed_arguments
    assert isinstance(arguments, GetWeather)
    assert check_weather_arguments(call.function.arguments) == arguments.model_dump()


def test_tool_round_trip(openai_client):
    """A forced call -> the tool's result -> a final answer (structured), the assistant
    message sent back exactly as the SDK returned it."""
    messages = list(ASK_WEATHER)
    first = openai_client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL], tool_choice=NAMED,
        max_tokens=BUDGET, temperature=0)
    [choice] = first.choices
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    check_weather_arguments(call.function.arguments)

    messages.append(choice.message)
    messages.append({"role": "tool", "tool_call_id": call.id, "content": WEATHER_RESULT})
    final = openai_client.chat.completions.parse(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL], tool_choice="none",
        response_format=WeatherAnswer, max_tokens=BUDGET, temperature=0)
    [choice] = final.choices
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    check_answer(choice.message.parsed)
    # the call and its result were rendered into the prompt (tool_choice=none leaves the
    # tools out of it): more tokens than the question alone
    alone = openai_client.chat.completions.create(
        model=MODEL, messages=ASK_WEATHER, tools=[WEATHER_TOOL], tool_choice="none",
        max_tokens=1)
    assert final.usage.prompt_tokens > alone.usage.prompt_tokens + first.usage.completion_tokens


def test_tool_call_streamed_equals_plain(openai_client):
    request = {"model": MODEL, "messages": ASK_WEATHER, "tools": [WEATHER_TOOL],
               "tool_choice": NAMED, "max_tokens": BUDGET, "temperature": 0}
    [call] = openai_client.chat.completions.create(**request).choices[0].message.tool_calls
    chunks = list(openai_client.chat.completions.create(**request, stream=True))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    assert deltas and {d.index for d in deltas} == {0}
    assert deltas[0].id and deltas[0].type == "function"
    assert deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"

    with openai_client.chat.completions.stream(**request) as stream:
        [done] = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
    assert done.name == "get_weather" and done.arguments == call.function.arguments


def test_logprobs(openai_client):
    completion = openai_client.chat.completions.create(**story(logprobs=True, top_logprobs=2))
    [choice] = completion.choices
    tokens = choice.logprobs.content
    assert len(tokens) == completion.usage.completion_tokens == 24
    assert "".join(t.token for t in tokens) == choice.message.content
    for token in tokens:
        assert token.logprob <= 0 and len(token.top_logprobs) == 2
        assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob
        assert token.top_logprobs[0].token == token.token  # greedy: the likeliest
        assert bytes(token.bytes).decode("utf-8", "replace")


def test_completions_stream_equals_plain(openai_client):
    request = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 24,
               "temperature": 0}
    plain = openai_client.completions.create(**request)
    assert plain.choices[0].text and plain.choices[0].finish_reason == "length"
    chunks = list(openai_client.completions.create(**request, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text


def test_models_and_embeddings(openai_client):
    assert [m.id for m in openai_client.models.list()] == [MODEL]
    assert openai_client.models.retrieve(MODEL).id == MODEL
    texts = ["A dragon drinks tea.", "def f(x): return x"]
    # the SDK asks for base64 unless told otherwise and decodes it
    base64 = openai_client.embeddings.create(model=MODEL, input=texts)
    floats = openai_client.embeddings.create(model=MODEL, input=texts, encoding_format="float",
                                      dimensions=EMBEDDING_DIMS)
    assert [d.index for d in base64.data] == [0, 1]
    for a, b in zip(base64.data, floats.data, strict=True):
        assert len(a.embedding) == len(b.embedding) == EMBEDDING_DIMS
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    assert base64.usage.prompt_tokens == base64.usage.total_tokens > 0


# --- the Responses API ---


def test_responses_stream_equals_plain(openai_client):
    request = {"model": MODEL, "input": STORY, "instructions": "Be vivid.",
               "max_output_tokens": 24, "temperature": 0}
    plain = openai_client.responses.create(**request)
    assert plain.status == "incomplete" and plain.output_text
    assert plain.incomplete_details.reason == "max_output_tokens"
    assert plain.usage.output_tokens == 24
    events = list(openai_client.responses.create(**request, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.incomplete"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == plain.output_text == events[-1].response.output_text
    assert events[-1].response.usage == plain.usage


def test_responses_stream_helper(openai_client):
    # the helper wants response.completed: a stop string (an extra) ends this one
    request = {"model": MODEL, "input": "What is the capital of France?",
               "max_output_tokens": BUDGET, "temperature": 0, "extra_body": {"stop": ["."]}}
    plain = openai_client.responses.create(**request)
    assert plain.status == "completed" and plain.output_text
    with openai_client.responses.stream(**request) as stream:
        events = list(stream)
        final = stream.get_final_response()
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    [done] = [e for e in events if e.type == "response.output_text.done"]
    assert text == done.text == final.output_text == plain.output_text


def test_responses_parse(openai_client):
    response = openai_client.responses.parse(
        model=MODEL, input="Invent a person.", text_format=Person,
        max_output_tokens=BUDGET, temperature=0)
    assert response.status == "completed"
    person = check_person(response.output_parsed)
    assert json.loads(response.output_text) == person.model_dump()


def test_responses_stateless_tool_round_trip(openai_client):
    """store=false: the openai_client sends the call and its output back as input items."""
    tools = [{"type": "function", "name": "get_weather", "strict": True,
              "description": "Get the current weather in a city.",
              "parameters": WEATHER_PARAMETERS}]
    history: list = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = openai_client.responses.create(
        model=MODEL, input=history, tools=tools, store=False, max_output_tokens=BUDGET,
        tool_choice={"type": "function", "name": "get_weather"}, temperature=0)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id
    check_weather_arguments(call.arguments)

    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id,
                    "output": WEATHER_RESULT})
    final = openai_client.responses.parse(
        model=MODEL, input=history, tools=tools, tool_choice="none", store=False,
        text_format=WeatherAnswer, max_output_tokens=BUDGET, temperature=0)
    assert final.status == "completed"
    assert [item.type for item in final.output] == ["message"]
    check_answer(final.output_parsed)
    # the call and its output were rendered into the prompt: more than the question alone
    alone = openai_client.responses.create(model=MODEL, input=history[:1], tools=tools,
                                    tool_choice="none", store=False, max_output_tokens=1)
    assert final.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
