"""The OpenAI Agents SDK (openai-agents), unchanged, against the real server: an Agent with
a function tool and a pydantic ``output_type``, run streamed and not, through the Chat
Completions model and the Responses model over a custom ``AsyncOpenAI`` client. Tracing
is off (it would upload traces to OpenAI)."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import pytest

agents = pytest.importorskip("agents")

import openai  # noqa: E402
from client_helpers import (  # noqa: E402
    BUDGET,
    MODEL,
    WEATHER_RESULT,
    WeatherAnswer,
    check_answer,
    check_weather_arguments,
)
from pydantic import Field  # noqa: E402

pytestmark = pytest.mark.clients

QUESTION = "What is the weather in Paris?"


@pytest.fixture(autouse=True, scope="module")
def no_tracing():
    agents.set_tracing_disabled(True)


@pytest.fixture
async def openai_client(api_base):
    client = openai.AsyncOpenAI(base_url=api_base, api_key="unused", max_retries=0,
                                timeout=120)
    yield client
    await client.close()


def weather_agent(model, calls: list[dict]):
    """An agent whose first turn must call get_weather; the tool is then disabled, so the
    second turn's only structure is WeatherAnswer's schema. (Left enabled under the
    tool_choice=auto the SDK resets to after a call, greedy SmolLM2 calls it again every
    turn: a valid output of the call-or-answer grammar, until max_turns.)"""

    @agents.function_tool(is_enabled=lambda context, agent: not calls)
    def get_weather(city: Annotated[str, Field(min_length=1, max_length=12)],
                    unit: Literal["celsius", "fahrenheit"]) -> str:
        """Get the current weather in a city.

        Args:
            city: The city's name.
            unit: The temperature unit.
        """
        calls.append({"city": city, "unit": unit})
        return WEATHER_RESULT

    return agents.Agent(
        name="Weather", instructions="Answer questions about the weather with the tool.",
        tools=[get_weather], output_type=WeatherAnswer, model=model,
        # include_usage: the SDK asks a server that is not OpenAI's for streamed usage
        # only when told to
        model_settings=agents.ModelSettings(temperature=0, max_tokens=BUDGET,
                                            tool_choice="get_weather", include_usage=True))


MODELS = {
    "chat_completions": lambda client: agents.OpenAIChatCompletionsModel(
        model=MODEL, openai_client=client),
    "responses": lambda client: agents.OpenAIResponsesModel(model=MODEL,
                                                            openai_client=client),
}


@pytest.mark.parametrize("kind", list(MODELS))
async def test_agent_with_tool_and_output_type_streamed(openai_client, kind):
    calls: list[dict] = []
    agent = weather_agent(MODELS[kind](openai_client), calls)
    result = agents.Runner.run_streamed(agent, QUESTION, max_turns=4)
    events = [event async for event in result.stream_events()]
    answer = check_answer(result.final_output)

    [call] = calls
    check_weather_arguments(call)
    items = [e.item for e in events if e.type == "run_item_stream_event"]
    assert [i.type for i in items] == ["tool_call_item", "tool_call_output_item",
                                       "message_output_item"]
    assert items[0].raw_item.name == "get_weather"
    assert json.loads(items[0].raw_item.arguments) == call
    assert items[1].output == WEATHER_RESULT
    assert items[1].raw_item["call_id"] == items[0].raw_item.call_id
    # the last turn's streamed text is the final output's JSON
    raw = [e.data for e in events if e.type == "raw_response_event"]
    last_turn = raw[max(i for i, d in enumerate(raw) if d.type == "response.created"):]
    text = "".join(d.delta for d in last_turn if d.type == "response.output_text.delta")
    assert WeatherAnswer.model_validate_json(text) == answer

    plain_calls: list[dict] = []
    plain = await agents.Runner.run(weather_agent(MODELS[kind](openai_client), plain_calls),
                                    QUESTION, max_turns=4)
    assert plain.final_output == answer and plain_calls == calls
    assert len(plain.raw_responses) == 2
    # token usage (streamed: the include_usage chunk, or response.completed's usage)
    usage, plain_usage = result.context_wrapper.usage, plain.context_wrapper.usage
    assert usage.requests == plain_usage.requests == 2
    assert usage.output_tokens == plain_usage.output_tokens > 0
    assert usage.input_tokens == plain_usage.input_tokens > 0
