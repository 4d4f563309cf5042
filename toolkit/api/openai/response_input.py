"""A Responses request -> the chat completions request the chat path serves.

Input items become chat messages (function calls join the assistant message before them,
function outputs become tool messages), tools and tool_choice take the chat shape, and
``text.format`` becomes ``response_format``. The chat path's errors name chat fields;
``responses_params`` renames them to the Responses fields the client sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import ValidationError

from toolkit.api.http.errors import APIError, from_validation_error, unsupported
from toolkit.api.openai.protocol import ChatCompletionRequest, ChatMessage, ContentPart
from toolkit.api.openai.protocol_responses import (
    FunctionCallInput,
    FunctionCallOutputInput,
    FunctionToolChoice,
    InputContentPart,
    InputItem,
    InputMessage,
    ResponsesRequest,
    TextConfig,
)
from toolkit.api.openai.protocol_sampling import JsonSchemaFormat, ResponseFormat
from toolkit.api.openai.protocol_tools import (
    FunctionDefinition,
    NamedFunction,
    NamedToolChoice,
    ToolChoice,
    ToolDefinition,
)

TEXT_PART_TYPES = ("input_text", "output_text", "text")
"""Content part types read as text."""

_PARAM_RENAMES = (
    (re.compile(r"^messages(\[.*)?$"), "input"),
    (re.compile(r"^max_(completion_)?tokens$"), "max_output_tokens"),
    (re.compile(r"^response_format\.json_schema.*$"), "text.format.schema"),
    (re.compile(r"^response_format.*$"), "text.format"),
    (re.compile(r"^tools(\[\d+\])\.function"), r"tools\1"),
)
"""Chat field -> the Responses field it came from."""


def responses_param(param: str | None) -> str | None:
    """The Responses name of a chat request field (unchanged when it has the same name)."""
    if param is None:
        return None
    for pattern, replacement in _PARAM_RENAMES:
        if pattern.search(param):
            return pattern.sub(replacement, param)
    return param


@contextmanager
def responses_params() -> Iterator[None]:
    """Re-raise the chat path's 400s naming the Responses field instead of the chat one."""
    try:
        yield
    except APIError as exc:
        param = responses_param(exc.param)
        message = exc.message
        for old in ("max_completion_tokens", "max_tokens"):
            message = message.replace(f"'{old}'", "'max_output_tokens'")
        raise APIError(message, exc.status, param=param, code=exc.code) from None


def input_messages(items: list[InputItem]) -> list[ChatMessage]:
    """Chat messages of the input items (reasoning items are left out); a 400 naming
    input when there are none."""
    messages: list[ChatMessage] = []
    for i, item in enumerate(items):
        if isinstance(item, InputMessage):
            messages.append(ChatMessage(role=item.role,
                                        content=_content(item.content, f"input[{i}].content")))
        elif isinstance(item, FunctionCallInput):
            _add_call(messages, item)
        elif isinstance(item, FunctionCallOutputInput):
            messages.append(ChatMessage(role="tool", tool_call_id=item.call_id,
                                        content=_content(item.output, f"input[{i}].output")))
    if not messages:
        raise APIError("input must hold at least one message or function item",
                       param="input", code="invalid_value")
    return messages


def chat_request(body: ResponsesRequest,
                 conversation: list[ChatMessage]) -> ChatCompletionRequest:
    """The chat request for ``body``: the instructions as a system message, then the
    ``conversation`` (earlier turns and this request's input)."""
    system = [ChatMessage(role="system", content=body.instructions)] \
        if body.instructions is not None else []
    fields = {name: getattr(body, name) for name in body.PASSED_THROUGH
              if getattr(body, name) is not None}
    try:
        return ChatCompletionRequest(
            model=body.model, messages=[*system, *conversation], stream=body.stream,
            max_completion_tokens=body.max_output_tokens, tools=chat_tools(body),
            tool_choice=chat_tool_choice(body), parallel_tool_calls=body.parallel_tool_calls,
            response_format=response_format(body.text), **fields,
        )
    except ValidationError as exc:
        error = from_validation_error(exc)
        raise APIError(error.message, param=responses_param(error.param),
                       code=error.code) from None


def chat_tools(body: ResponsesRequest) -> list[ToolDefinition] | None:
    """The function tools in the chat shape; a 400 for another tool type or a nameless
    function."""
    if not body.tools:
        return None
    tools = []
    for i, tool in enumerate(body.tools):
        if tool.type != "function":
            raise unsupported(f"tools[{i}].type", f"Tool type '{tool.type}'")
        if tool.name is None:
            raise APIError("A function tool needs a name", param=f"tools[{i}].name",
                           code="invalid_value")
        tools.append(ToolDefinition(function=FunctionDefinition(
            name=tool.name, description=tool.description, parameters=tool.parameters,
            strict=tool.strict)))
    return tools


def chat_tool_choice(body: ResponsesRequest) -> ToolChoice | None:
    """``{"type": "function", "name"}`` -> the chat's nested named choice."""
    choice = body.tool_choice
    if isinstance(choice, FunctionToolChoice):
        return NamedToolChoice(function=NamedFunction(name=choice.name))
    return choice


def response_format(text: TextConfig | None) -> ResponseFormat | None:
    """``text.format`` as the chat's response_format (None for plain text)."""
    if text is None or text.format.type == "text":
        return None
    fmt = text.format
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    if not fmt.name:
        raise APIError("text.format of type json_schema needs a name",
                       param="text.format.name", code="invalid_value")
    if fmt.schema_ is None:
        raise APIError("text.format of type json_schema needs a schema",
                       param="text.format.schema", code="invalid_value")
    schema = JsonSchemaFormat.model_validate({
        "name": fmt.name, "description": fmt.description, "schema": fmt.schema_,
        "strict": fmt.strict})
    return ResponseFormat(type="json_schema", json_schema=schema)


def _content(content: str | list[InputContentPart], param: str) -> str | list[ContentPart]:
    """Text, or text parts (joined by the chat path); other part types are a 400."""
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        if part.type not in TEXT_PART_TYPES:
            raise unsupported(f"{param}[{j}].type", f"Content part type '{part.type}'")
        if part.text is None:
            raise APIError("A text content part needs 'text'", param=f"{param}[{j}].text",
                           code="invalid_value")
        parts.append(ContentPart(type="text", text=part.text))
    return parts


def _add_call(messages: list[ChatMessage], item: FunctionCallInput) -> None:
    """Append the call to the assistant message just before it, or start one."""
    call = {"id": item.call_id, "type": "function",
            "function": {"name": item.name, "arguments": item.arguments}}
    last = messages[-1] if messages else None
    if last is not None and last.role == "assistant":
        last.tool_calls = [*(last.tool_calls or []), call]
    else:
        messages.append(ChatMessage(role="assistant", content=None, tool_calls=[call]))
