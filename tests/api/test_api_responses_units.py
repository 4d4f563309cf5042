"""The Responses translation without a model: input items -> chat messages, chat deltas
-> typed events (validated by the openai SDK), param renames, the bounded store."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from test_api_responses_checks import event_types, sdk_event, sdk_response

from toolkit.api.http.errors import APIError, from_validation_error
from toolkit.api.openai.protocol import ChatMessage
from toolkit.api.openai.protocol_responses import ResponsesRequest
from toolkit.api.openai.protocol_tools import (
    FunctionCall,
    FunctionCallDelta,
    ToolCall,
    ToolCallDelta,
)
from toolkit.api.openai.response_input import (
    chat_request,
    input_messages,
    responses_param,
    responses_params,
)
from toolkit.api.openai.response_objects import ResponseObject, ResponseUsage
from toolkit.api.openai.response_output import (
    ResponseStream,
    conversation_messages,
    output_items,
)
from toolkit.api.openai.response_store import ResponseStore
from toolkit.api.openai.responses import AssistantMessage, DeltaMessage


def request(**fields) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"input": "Hi", **fields})


def skeleton(response_id: str = "resp_1") -> ResponseObject:
    return ResponseObject(id=response_id, created_at=1, status="in_progress", model="m")


def call_delta(index: int, arguments: str, name: str | None = None) -> DeltaMessage:
    """A chat tool-call delta; with ``name`` the call's first one (id, type, name)."""
    first = name is not None
    return DeltaMessage(tool_calls=[ToolCallDelta(
        index=index, id=f"call_{index}" if first else None, type="function" if first else None,
        function=FunctionCallDelta(name=name, arguments=arguments))])


def test_input_items_become_chat_messages():
    body = request(input=[
        {"role": "developer", "content": "Rules."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{\"x\":1}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "two"}]},
    ], instructions="Be kind.", max_output_tokens=5, tool_choice={"type": "function",
                                                                  "name": "f"},
        tools=[{"type": "function", "name": "f"}, {"type": "function", "name": "g"}])
    messages = input_messages(body.items())
    assert [m.role for m in messages] == ["developer", "user", "assistant", "tool", "tool"]
    assert [p.text for p in messages[1].content] == ["a", "b"]
    assert [c["id"] for c in messages[2].tool_calls] == ["c1", "c2"]
    assert messages[3].tool_call_id == "c1" and messages[3].content == "one"
    chat = chat_request(body, messages)
    assert chat.messages[0].role == "system" and chat.messages[0].content == "Be kind."
    assert chat.max_completion_tokens == 5 and chat.tool_choice.function.name == "f"
    assert [t.function.name for t in chat.tools] == ["f", "g"]


def test_text_format_becomes_response_format():
    schema = {"type": "object"}
    hi = [ChatMessage(role="user", content="Hi")]
    chat = chat_request(request(text={"format": {
        "type": "json_schema", "name": "obj", "schema": schema, "strict": True}}), hi)
    assert chat.response_format.type == "json_schema"
    assert chat.response_format.json_schema.schema_ == schema
    assert chat.response_format.json_schema.name == "obj"
    chat = chat_request(request(text={"format": {"type": "json_object"}}), hi)
    assert chat.response_format.type == "json_object"
    assert chat_request(request(text={"format": {"type": "text"}}), hi).response_format is None


def test_a_call_without_an_assistant_message_starts_one():
    body = request(input=[{"role": "user", "content": "q"},
                          {"type": "function_call", "call_id": "c", "name": "f",
                           "arguments": "{}"}])
    user, assistant = input_messages(body.items())
    assert assistant.role == "assistant" and assistant.content is None
    assert assistant.tool_calls[0]["function"] == {"name": "f", "arguments": "{}"}


@pytest.mark.parametrize(("fields", "param"), [
    ({"input": [{"type": "reasoning"}]}, "input"),
    ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
     "input[0].content[0].text"),
    ({"input": [{"type": "function_call_output", "call_id": "c",
                 "output": [{"type": "input_image"}]}]}, "input[0].output[0].type"),
])
def test_bad_items_name_their_param(fields, param):
    with pytest.raises(APIError) as info:
        input_messages(request(**fields).items())
    assert info.value.param == param and info.value.status == 400


@pytest.mark.parametrize(("fields", "param"), [
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
     "input[0].call_id"),
    ({"input": 5}, "input"),
    ({"tool_choice": {"type": "file_search"}}, "tool_choice"),
    ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"top_p": float("inf")}, "top_p"),
])
def test_body_errors_name_the_field(fields, param):
    with pytest.raises(ValidationError) as info:
        request(**fields)
    assert from_validation_error(info.value).param == param


@pytest.mark.parametrize(("chat", "responses"), [
    ("messages", "input"), ("messages[3].content", "input"),
    ("max_completion_tokens", "max_output_tokens"), ("max_tokens", "max_output_tokens"),
    ("response_format", "text.format"), ("response_format.json_schema", "text.format.schema"),
    ("tools[1].function.parameters", "tools[1].parameters"), ("tool_choice", "tool_choice"),
    ("temperature", "temperature"), (None, None),
])
def test_chat_params_are_renamed(chat, responses):
    assert responses_param(chat) == responses


def test_chat_errors_are_reraised_with_responses_names():
    with pytest.raises(APIError) as info, responses_params():
        raise APIError("'max_completion_tokens' is too large: 9", param="max_completion_tokens",
                       code="context_length_exceeded")
    assert info.value.param == "max_output_tokens" and info.value.status == 400
    assert info.value.message == "'max_output_tokens' is too large: 9"
    assert info.value.code == "context_length_exceeded"


def test_output_items_of_a_chat_message():
    calls = [ToolCall(id="call_a", function=FunctionCall(name="f", arguments="{}"))]
    message = AssistantMessage(content="Sure.", reasoning_content="hmm", tool_calls=calls)
    items = output_items(message, incomplete=True)
    assert [i.type for i in items] == ["reasoning", "message", "function_call"]
    assert [i.status for i in items] == ["completed", "completed", "incomplete"]
    only_calls = output_items(AssistantMessage(content=None, tool_calls=calls), False)
    assert [i.type for i in only_calls] == ["function_call"]
    [turn] = conversation_messages(items)
    assert turn.content == "Sure." and turn.tool_calls[0]["id"] == "call_a"


def test_stream_of_reasoning_text_and_calls():
    writer = ResponseStream(skeleton())
    events = writer.opening()
    deltas = [DeltaMessage(reasoning_content="Let me "), DeltaMessage(reasoning_content="see."),
              DeltaMessage(content="Calling."), call_delta(0, "", "f"),
              call_delta(0, '{"a": '), call_delta(0, "1}"), call_delta(1, '{"b": 2}', "g")]
    for delta in deltas:
        events += writer.feed(delta)
    events += writer.close(ResponseUsage.of(10, 7), incomplete=False)
    data = [event.model_dump(mode="json") for event in events]
    for event in data:
        sdk_event(event)
    assert [e["sequence_number"] for e in data] == list(range(len(data)))
    reasoning = ["response.output_item.added", "response.content_part.added",
                 "response.reasoning_text.delta", "response.reasoning_text.done",
                 "response.content_part.done", "response.output_item.done"]
    text = [t.replace("reasoning_text", "output_text") for t in reasoning]
    call = ["response.output_item.added", "response.function_call_arguments.delta",
            "response.function_call_arguments.done", "response.output_item.done"]
    assert event_types(data) == ["response.created", "response.in_progress", *reasoning,
                                 *text, *call, *call, "response.completed"]
    final = sdk_response(data[-1]["response"])
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call",
                                                    "function_call"]
    assert final.output[0].content[0].text == "Let me see."
    assert final.output_text == "Calling."
    assert [(c.call_id, c.name, c.arguments) for c in final.output[2:]] == [
        ("call_0", "f", '{"a": 1}'), ("call_1", "g", '{"b": 2}')]
    assert [e["output_index"] for e in data if e["type"] == "response.output_item.done"] \
        == [0, 1, 2, 3]
    assert final.usage.total_tokens == 17 and final.status == "completed"


def test_empty_and_cut_streams():
    writer = ResponseStream(skeleton())
    events = [*writer.opening(), *writer.close(ResponseUsage.of(3, 0), incomplete=False)]
    data = [event.model_dump(mode="json") for event in events]
    for event in data:
        sdk_event(event)
    assert data[-1]["response"]["output"][0]["content"][0]["text"] == ""
    writer = ResponseStream(skeleton())
    events = [*writer.opening(), *writer.feed(DeltaMessage(content="Once")),
              *writer.close(ResponseUsage.of(3, 1), incomplete=True)]
    final = events[-1].model_dump(mode="json")
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["response"]["output"][0]["status"] == "incomplete"
    sdk_event(final)


def test_error_event_is_valid():
    writer = ResponseStream(skeleton())
    writer.opening()
    event = writer.error(APIError("deadline", status=408, code="request_timeout"))
    assert event.sequence_number == 2
    sdk_event(event.model_dump(mode="json"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_store_evicts_the_oldest_and_expires():
    clock = Clock()
    store = ResponseStore(max_entries=2, ttl_s=10.0, clock=clock)
    for i in range(3):
        clock.now = float(i)
        store.put(skeleton(f"resp_{i}"), [])
    assert store.get("resp_0") is None and len(store) == 2
    clock.now = 11.5
    assert store.get("resp_1") is None and store.get("resp_2") is not None
    assert store.delete("resp_2") and not store.delete("resp_2") and len(store) == 0


def test_store_limits():
    store = ResponseStore(max_entries=0)
    store.put(skeleton(), [])
    assert store.get("resp_1") is None
    forever = ResponseStore(max_entries=1, ttl_s=None, clock=lambda: 1e12)
    forever.put(skeleton(), [])
    assert forever.get("resp_1") is not None
    with pytest.raises(ValueError):
        ResponseStore(max_entries=-1)
    with pytest.raises(ValueError):
        ResponseStore(ttl_s=0)
