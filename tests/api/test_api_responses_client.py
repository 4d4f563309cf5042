"""The Responses API through the official ``openai.AsyncOpenAI`` client against a real
uvicorn server: create (plain, streamed, tools, structured), retrieve, delete, errors."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from api_client import MODEL
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseIncompleteEvent,
    ResponseOutputMessage,
    ResponseTextDeltaEvent,
)
from pydantic import BaseModel, Field

pytestmark = pytest.mark.slow

WEATHER = {"type": "object",
           "properties": {"city": {"type": "string", "maxLength": 12},
                          "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"]}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather now",
          "parameters": WEATHER, "strict": True}]


class Person(BaseModel):
    """A structured output the SDK turns into a strict JSON schema and parses back."""

    name: str = Field(max_length=10)
    age: int = Field(ge=0, le=120)


@pytest.fixture
async def client(base_url):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    yield client
    await client.close()


async def test_create_retrieve_delete(client):
    response = await client.responses.create(
        model=MODEL, input="Write a long story about a dragon.", instructions="Be vivid.",
        max_output_tokens=8, temperature=0)
    assert isinstance(response, Response) and response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert isinstance(response.output[0], ResponseOutputMessage) and response.output_text
    assert response.usage.output_tokens == 8
    assert response.usage.total_tokens == response.usage.input_tokens + 8
    stored = await client.responses.retrieve(response.id)
    assert stored.output_text == response.output_text and stored.id == response.id
    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


async def test_stream(client):
    stream = await client.responses.create(
        model=MODEL, input="Write a long story about a dragon.", max_output_tokens=8,
        temperature=0, stream=True)
    events = [event async for event in stream]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[1].type == "response.in_progress"
    assert isinstance(events[-1], ResponseIncompleteEvent)
    text = "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent))
    assert text and events[-1].response.output_text == text
    plain = await client.responses.create(
        model=MODEL, input="Write a long story about a dragon.", max_output_tokens=8,
        temperature=0)
    assert plain.output_text == text


async def test_tool_call_round_trip(client):
    response = await client.responses.create(
        model=MODEL, input="What is the weather in Paris?", tools=TOOLS,
        tool_choice="required", parallel_tool_calls=False, max_output_tokens=60,
        temperature=1.0, extra_body={"seed": 2})
    [call] = response.output
    assert isinstance(call, ResponseFunctionToolCall) and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    stream = await client.responses.create(
        model=MODEL, previous_response_id=response.id, tools=TOOLS, max_output_tokens=10,
        input=[{"type": "function_call_output", "call_id": call.call_id,
                "output": "21 degrees"}], stream=True)
    events = [event async for event in stream]
    final = events[-1]
    assert isinstance(final, ResponseCompletedEvent | ResponseIncompleteEvent)
    assert final.response.previous_response_id == response.id
    assert final.response.usage.input_tokens > response.usage.input_tokens


async def test_structured_output_parses(client):
    response = await client.responses.parse(
        model=MODEL, input="Invent a person.", text_format=Person, max_output_tokens=60,
        temperature=1.0, extra_body={"seed": 3})
    assert response.status == "completed"
    assert isinstance(response.output_parsed, Person)


async def test_errors_raise_the_sdk_exceptions(client):
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model=MODEL, input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://example.com/a.png"}]}])
    assert info.value.param == "input[0].content[0].type"
    with pytest.raises(openai.NotFoundError) as info:
        await client.responses.create(model=MODEL, input="Hi", previous_response_id="resp_x")
    assert info.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete("resp_nope")
