"""Tool-call parsers: a model's raw output -> (content, tool calls), by model family.

Each parser knows the marker that opens its calls, so a streaming caller can send text up
to the marker and hold back the rest until the output is complete.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ParsedCall:
    """One call: the function name and its arguments as JSON text."""

    name: str
    arguments: str


@dataclass(frozen=True)
class ParsedOutput:
    """What a parser found: the text meant for the user and the calls."""

    content: str
    """The output without the tool calls (stripped)."""
    calls: tuple[ParsedCall, ...] = field(default=())


@dataclass(frozen=True)
class ToolParser:
    """A named parser and the marker that opens its tool calls."""

    name: str
    marker: str
    """Output text from here on is held back while streaming."""
    parse: Callable[[str], ParsedOutput]


_HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def parse_hermes(text: str) -> ParsedOutput:
    """``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks (Hermes, Qwen)."""
    if "<tool_call>" not in text:
        return ParsedOutput(text.strip())
    calls = [_call(block) for block in _HERMES_CALL.findall(text)]
    if any(call is None for call in calls):
        return ParsedOutput(text.strip())
    return ParsedOutput(text[: text.index("<tool_call>")].strip(), tuple(calls))


def parse_mistral(text: str) -> ParsedOutput:
    """``[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]`` (Mistral)."""
    if "[TOOL_CALLS]" not in text:
        return ParsedOutput(text.strip())
    head, _, tail = text.partition("[TOOL_CALLS]")
    calls = _calls_of(_loads(tail.strip()))
    return ParsedOutput(head.strip(), calls) if calls else ParsedOutput(text.strip())


def parse_llama3_json(text: str) -> ParsedOutput:
    """A JSON object ``{"name": ..., "parameters": {...}}`` (or several joined by ``;``),
    optionally after ``<|python_tag|>`` (Llama 3.1+)."""
    body = text.replace("<|python_tag|>", "").strip()
    if not body.startswith("{"):
        return ParsedOutput(text.strip())
    parts = re.split(r"(?<=\})\s*;\s*(?=\{)", body)
    calls = _calls_of([_loads(part) for part in parts] if len(parts) > 1 else _loads(body))
    return ParsedOutput("", calls) if calls else ParsedOutput(text.strip())


TOOL_PARSERS: dict[str, ToolParser] = {
    "hermes": ToolParser("hermes", "<tool_call>", parse_hermes),
    "mistral": ToolParser("mistral", "[TOOL_CALLS]", parse_mistral),
    "llama3_json": ToolParser("llama3_json", "{", parse_llama3_json),
}
"""Parsers by the name ``server.chat.tool_parser`` takes."""


def get_tool_parser(name: str) -> ToolParser:
    """The parser called ``name``; a ValueError listing the valid names otherwise."""
    if name not in TOOL_PARSERS:
        raise ValueError(f"tool parser {name!r} is unknown; valid: {', '.join(TOOL_PARSERS)}")
    return TOOL_PARSERS[name]


def _loads(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _call(block: str) -> ParsedCall | None:
    calls = _calls_of(_loads(block))
    return calls[0] if len(calls) == 1 else None


def _calls_of(value) -> tuple[ParsedCall, ...]:
    """Calls from a decoded object or list; empty when any item is not a call."""
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return ()
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            arguments = _loads(arguments) if _loads(arguments) is not None else arguments
        calls.append(ParsedCall(item["name"], arguments if isinstance(arguments, str)
                                else json.dumps(arguments, ensure_ascii=False)))
    return tuple(calls)
