"""Tool choice -> a guided spec (named, required) and generated text -> tool calls."""

from __future__ import annotations

import json
from dataclasses import dataclass

from toolkit.api.openai.guided import invalid, json_spec
from toolkit.api.openai.protocol import ChatCompletionRequest
from toolkit.api.openai.protocol_tools import FunctionCall, NamedToolChoice, ToolCall
from toolkit.protocol import GuidedSpec
from toolkit.tokenizer.tool_parsers import ParsedCall, ParsedOutput, ToolParser


@dataclass(frozen=True)
class ToolMode:
    """How a chat request uses its tools."""

    kind: str
    """none (no tools), auto (the model decides, the parser reads its calls), required
    (one or more calls, forced by a grammar) or named (one call of ``name``)."""
    name: str | None = None
    """The forced function, for named."""


def tool_mode(request: ChatCompletionRequest) -> ToolMode:
    """The request's mode; a 400 naming tool_choice when it does not fit the tools."""
    choice, tools = request.tool_choice, request.tools or []
    names = [tool.function.name for tool in tools]
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in names:
            raise invalid("tool_choice", f"tool_choice names {choice.function.name!r}, "
                          "which is not in tools")
        return ToolMode("named", choice.function.name)
    if choice == "required" and not tools:
        raise invalid("tool_choice", "tool_choice=required needs tools")
    if choice == "none" or not tools:
        return ToolMode("none")
    return ToolMode(choice or "auto")


def tool_spec(request: ChatCompletionRequest, mode: ToolMode) -> GuidedSpec | None:
    """The grammar that forces the calls: the named function's arguments, or (required)
    a JSON array of ``{"name", "arguments"}`` objects over every tool."""
    if mode.kind == "named":
        function = next(t.function for t in request.tools if t.function.name == mode.name)
        return json_spec(function.arguments_schema(), "tools")
    if mode.kind != "required":
        return None
    variants = [{
        "type": "object",
        "properties": {"name": {"enum": [t.function.name]},
                       "arguments": t.function.arguments_schema()},
        "required": ["name", "arguments"],
    } for t in request.tools]
    schema = {"type": "array", "items": {"anyOf": variants}, "minItems": 1}
    if request.parallel_tool_calls is False:
        schema["maxItems"] = 1
    return json_spec(schema, "tools")


def parse_calls(mode: ToolMode, text: str, parser: ToolParser) -> ParsedOutput:
    """The content and calls of a complete output under ``mode``."""
    if mode.kind == "named":
        return ParsedOutput("", (_call(mode.name, text),))
    if mode.kind == "required":
        items = _forced_calls(text)
        if items is None:  # cut short (max_tokens): no complete array to read
            return ParsedOutput(text.strip())
        return ParsedOutput("", tuple(_call(i["name"], json.dumps(i["arguments"],
                                                                  ensure_ascii=False))
                                      for i in items))
    if mode.kind == "auto":
        return parser.parse(text)
    return ParsedOutput(text)


def tool_calls(parsed: ParsedOutput) -> list[ToolCall]:
    """OpenAI tool calls of parsed calls (fresh ids)."""
    return [ToolCall(function=FunctionCall(name=c.name, arguments=c.arguments))
            for c in parsed.calls]


def _forced_calls(text: str) -> list[dict] | None:
    """The ``[{"name", "arguments"}, ...]`` array a required tool choice forces, or None
    when the output does not hold a complete one."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(items, list) or not all(
            isinstance(i, dict) and "name" in i and "arguments" in i for i in items):
        return None
    return items


def _call(name: str, arguments: str) -> ParsedCall:
    return ParsedCall(name, arguments.strip())
