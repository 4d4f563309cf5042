"""langchain-openai, unchanged, against the real server: ``ChatOpenAI`` invoke and stream,
``with_structured_output`` (json_schema and function_calling), ``bind_tools`` with a
forced call and the tool's ToolMessage sent back, and ``OpenAIEmbeddings``."""

from __future__ import annotations

import httpx
import pytest

langchain_openai = pytest.importorskip("langchain_openai")

from client_helpers import (  # noqa: E402
    BUDGET,
    EMBEDDING_DIMS,
    MODEL,
    STORY,
    WEATHER_RESULT,
    GetWeather,
    Person,
    WeatherAnswer,
    check_answer,
    check_person,
    check_weather_arguments,
)
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

pytestmark = pytest.mark.clients

TEXTS = ["The capital of France is", "A dragon drinks tea.", "def f(x): return x"]


@tool("get_weather", args_schema=GetWeather)
def get_weather(city: str, unit: str) -> str:
    """Get the current weather in a city."""
    return WEATHER_RESULT


def chat_model(api_base, **fields):
    fields = {"max_tokens": BUDGET, **fields}
    return langchain_openai.ChatOpenAI(model=MODEL, base_url=api_base, api_key="unused",
                                       temperature=0, max_retries=0, timeout=120, **fields)


def test_invoke_and_stream_agree(api_base):
    llm = chat_model(api_base, max_tokens=24, stream_usage=True)
    message = llm.invoke(STORY)
    assert isinstance(message, AIMessage) and isinstance(message.content, str)
    assert message.content and not message.tool_calls
    assert message.response_metadata["finish_reason"] == "length"
    assert message.response_metadata["model_name"] == MODEL
    assert message.usage_metadata["output_tokens"] == 24
    chunks = list(llm.stream(STORY))
    assert "".join(chunk.content for chunk in chunks) == message.content
    merged = sum(chunks[1:], chunks[0])
    assert merged.response_metadata["finish_reason"] == "length"
    assert merged.usage_metadata == message.usage_metadata


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output(api_base, method):
    structured = chat_model(api_base).with_structured_output(Person, method=method,
                                                             include_raw=True)
    result = structured.invoke("Invent a person.")
    assert result["parsing_error"] is None
    person = check_person(result["parsed"])
    raw = result["raw"]
    if method == "function_calling":
        [call] = raw.tool_calls
        assert call["name"] == "Person" and call["args"] == person.model_dump()
    else:
        assert not raw.tool_calls
    assert chat_model(api_base).with_structured_output(Person, method=method).invoke(
        "Invent a person.") == person


@pytest.mark.parametrize("tool_choice", ["get_weather", "any"])
def test_bind_tools_round_trip(api_base, tool_choice):
    """A forced call, the tool run on it (its ToolMessage) sent back, a final answer."""
    llm = chat_model(api_base)
    question = HumanMessage("What is the weather in Paris?")
    # one call: under "any" (required) with parallel calls allowed, greedy SmolLM2 keeps
    # appending calls until max_tokens cuts the array
    call_message = llm.bind_tools([get_weather], tool_choice=tool_choice,
                                  parallel_tool_calls=False).invoke([question])
    assert call_message.response_metadata["finish_reason"] == "tool_calls"
    assert not call_message.invalid_tool_calls
    [call] = call_message.tool_calls
    assert call["name"] == "get_weather" and call["id"] and call["type"] == "tool_call"
    check_weather_arguments(call["args"])

    tool_message = get_weather.invoke(call)
    assert isinstance(tool_message, ToolMessage) and tool_message.tool_call_id == call["id"]
    answer = llm.with_structured_output(WeatherAnswer, method="json_schema").invoke(
        [question, call_message, tool_message])
    check_answer(answer)


def test_bind_tools_streamed_equals_invoked(api_base):
    llm = chat_model(api_base).bind_tools([get_weather], tool_choice="get_weather")
    invoked = llm.invoke("What is the weather in Paris?")
    chunks = list(llm.stream("What is the weather in Paris?"))
    merged = sum(chunks[1:], chunks[0])
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [
        (c["name"], c["args"]) for c in invoked.tool_calls]
    assert len(merged.tool_calls) == 1


def test_responses_api(api_base):
    """ChatOpenAI over the Responses API (use_responses_api=True): invoke and stream
    agree, a structured output and a forced tool call."""
    llm = chat_model(api_base, max_tokens=24, use_responses_api=True)
    message = llm.invoke(STORY)
    assert message.text and message.usage_metadata["output_tokens"] == 24
    chunks = list(llm.stream(STORY))
    assert "".join(chunk.text for chunk in chunks) == message.text

    llm = chat_model(api_base, use_responses_api=True)
    person = llm.with_structured_output(Person, method="json_schema").invoke(
        "Invent a person.")
    check_person(person)
    call_message = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(
        "What is the weather in Paris?")
    [call] = call_message.tool_calls
    assert call["name"] == "get_weather" and call["id"]
    check_weather_arguments(call["args"])


def test_embeddings(api_base):
    embeddings = langchain_openai.OpenAIEmbeddings(
        model=MODEL, base_url=api_base, api_key="unused", check_embedding_ctx_length=False,
        max_retries=0)
    documents = embeddings.embed_documents(TEXTS)
    assert len(documents) == len(TEXTS)
    assert all(len(vector) == EMBEDDING_DIMS for vector in documents)
    assert all(sum(x * x for x in v) == pytest.approx(1.0, rel=1e-4) for v in documents)
    # the text was embedded (not tiktoken ids): the vectors are the server's own for it
    reply = httpx.post(f"{api_base}/embeddings", timeout=120, json={
        "model": MODEL, "input": TEXTS, "encoding_format": "float"})
    assert reply.status_code == 200, reply.text
    expected = [item["embedding"] for item in reply.json()["data"]]
    for ours, theirs in zip(documents, expected, strict=True):
        assert ours == pytest.approx(theirs, abs=1e-6)
    assert embeddings.embed_query(TEXTS[1]) == pytest.approx(documents[1], abs=1e-5)
