"""LiteLLM, unchanged, against the real server as an OpenAI-compatible endpoint
(``model="openai/smollm2"``, ``api_base``): completion plain, streamed (sync and async),
a forced tool call, and a pydantic ``response_format``."""

from __future__ import annotations

import pytest

litellm = pytest.importorskip("litellm")

from client_helpers import (  # noqa: E402
    BUDGET,
    MODEL,
    STORY,
    WEATHER_TOOL,
    Person,
    check_person,
    check_weather_arguments,
)

pytestmark = [
    pytest.mark.clients,
    # LiteLLM's own pydantic models warn on import and when chunks are rebuilt
    pytest.mark.filterwarnings("ignore:.*ReadOnly.*:UserWarning"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]

NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture
def call(api_base):
    """The keyword arguments every LiteLLM call here carries."""

    def make(**fields):
        return {"model": f"openai/{MODEL}", "api_base": api_base, "api_key": "unused",
                "temperature": 0, "num_retries": 0, "timeout": 120, **fields}

    return make


def test_completion_stream_equals_plain(call):
    messages = [{"role": "user", "content": STORY}]
    plain = litellm.completion(**call(messages=messages, max_tokens=24))
    [choice] = plain.choices
    assert choice.message.content and choice.finish_reason == "length"
    assert plain.usage.completion_tokens == 24
    chunks = list(litellm.completion(**call(messages=messages, max_tokens=24, stream=True,
                                            stream_options={"include_usage": True})))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert "length" in reasons
    rebuilt = litellm.stream_chunk_builder(chunks, messages=messages)
    assert rebuilt.choices[0].message.content == choice.message.content
    assert rebuilt.usage.completion_tokens == 24
    assert rebuilt.usage.prompt_tokens == plain.usage.prompt_tokens


async def test_async_stream_equals_plain(call):
    messages = [{"role": "user", "content": STORY}]
    plain = await litellm.acompletion(**call(messages=messages, max_tokens=24))
    stream = await litellm.acompletion(**call(messages=messages, max_tokens=24, stream=True))
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == plain.choices[0].message.content


def test_forced_tool_call(call):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    response = litellm.completion(**call(messages=messages, tools=[WEATHER_TOOL],
                                         tool_choice=NAMED, max_tokens=BUDGET))
    [choice] = response.choices
    assert choice.finish_reason == "tool_calls"
    [tool_call] = choice.message.tool_calls
    assert tool_call.function.name == "get_weather" and tool_call.id
    arguments = check_weather_arguments(tool_call.function.arguments)

    chunks = list(litellm.completion(**call(messages=messages, tools=[WEATHER_TOOL],
                                            tool_choice=NAMED, max_tokens=BUDGET,
                                            stream=True)))
    rebuilt = litellm.stream_chunk_builder(chunks, messages=messages)
    [streamed] = rebuilt.choices[0].message.tool_calls
    assert streamed.function.name == "get_weather"
    assert check_weather_arguments(streamed.function.arguments) == arguments


def test_pydantic_response_format(call):
    response = litellm.completion(**call(
        messages=[{"role": "user", "content": "Invent a person."}], response_format=Person,
        max_tokens=BUDGET))
    [choice] = response.choices
    assert choice.finish_reason == "stop"
    check_person(Person.model_validate_json(choice.message.content))
