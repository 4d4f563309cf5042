"""Tool choice -> a guided spec (named, required, or auto with response_format) and
generated text -> tool calls."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from toolkit.api.openai.guided import invalid, json_spec
from toolkit.api.openai.protocol import ChatCompletionRequest
from toolkit.api.openai.protocol_tools import FunctionCall, NamedToolChoice, ToolCall
from toolkit.api.openai.tool_grammar import call_or_answer_spec
from toolkit.protocol import GuidedSpec
from toolkit.tokenizer.tool_call_stream import CallScanner
from toolkit.tokenizer.tool_parsers import ParsedCall, ParsedOutput, ToolParser

_OPEN_NAME = re.compile(r'"name"\s*:\s*"([^"\\]*)$')
"""A ``"name": "...`` string the output was cut inside of."""


@dataclass(frozen=True)
class ToolMode:
    """How a chat request uses its tools."""

    kind: str
    """none (no tools), auto (the model decides, the parser reads its calls), required
    (one or more calls, forced by a grammar) or named (one call of ``name``)."""
    name: str | None = None
    """The forced function, for named."""
    names: tuple[str, ...] = ()
    """Every tool's name, for required (a call cut inside its name is told by them)."""


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
    if choice == "required":
        return ToolMode("required", names=tuple(names))
    return ToolMode("auto")


def chat_constraint(request: ChatCompletionRequest, mode: ToolMode, spec: GuidedSpec | None,
                    parser: str) -> GuidedSpec | None:
    """The grammar of a chat turn: a forced tool choice's (which governs the turn over
    response_format); under auto with response_format, calls or the answer format
    (``tool_grammar``); else ``spec`` (guided_* / response_format). A guided_* field with
    a forced tool choice is a 400."""
    forced = tool_spec(request, mode)
    from_format = spec is not None and spec.param.startswith("response_format")
    if forced is not None:
        if spec is not None and not from_format:
            raise invalid("tool_choice", f"tool_choice={request.tool_choice!r} cannot be "
                          f"combined with {spec.param}")
        return forced
    if mode.kind == "auto" and from_format:
        return call_or_answer_spec(request.tools, request.parallel_tool_calls is not False,
                                   parser, spec)
    return spec


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
        if items is None:  # cut short (max_tokens): the calls begun, arguments partial
            return ParsedOutput("", partial_calls(text, mode.names))
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


def partial_calls(text: str, names: tuple[str, ...] = ()) -> tuple[ParsedCall, ...]:
    """The calls of a forced ``[{"name", "arguments"}, ...]`` array cut short: each call
    whose name was written, with the arguments text written so far; a last call cut inside
    its name too, when exactly one of ``names`` starts with what was written of it."""
    names_read: list[str] = []
    arguments: list[str] = []
    for event in CallScanner().feed(text):
        if event.name is not None:
            names_read.append(event.name)
            arguments.append("")
        else:
            arguments[event.index] += event.arguments
    calls = [ParsedCall(name, args) for name, args in zip(names_read, arguments)]
    cut = _cut_name(text, names)
    if cut is not None:
        calls.append(ParsedCall(cut, ""))
    return tuple(calls)


def _cut_name(text: str, names: tuple[str, ...]) -> str | None:
    """The one tool a call's name cut short can be (its object at depth 2: in the array,
    not inside some arguments), else None."""
    match = _OPEN_NAME.search(text)
    if match is None or _depth(text[:match.start()]) != 2:
        return None
    candidates = [name for name in names if name.startswith(match.group(1))]
    return candidates[0] if len(candidates) == 1 else None


def _depth(text: str) -> int:
    """How many JSON arrays and objects are open at the end of ``text``."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return depth


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
