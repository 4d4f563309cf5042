"""``tools`` with ``response_format`` under tool_choice=auto: call tools or answer in the schema.

OpenAI lets such a turn either call tools or answer in the requested format. The grammar
is an xgrammar structural tag, ``or(answer, calls)``: the answer is the response_format's
JSON; the calls are written the way ``server.chat.tool_parser`` reads them, each call's
arguments following its function's parameters schema. The API builds the tag as plain
JSON; ``toolkit.guided`` checks and compiles it (JSON parts with the same compact
whitespace as any other JSON constraint).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from toolkit.api.openai.guided import invalid
from toolkit.api.openai.protocol_tools import ToolDefinition
from toolkit.protocol import GuidedSpec

JSON_OBJECT_SCHEMA = {"type": "object"}
"""response_format json_object: any JSON object."""


@dataclass(frozen=True)
class CallSyntax:
    """How a tool parser's format writes the calls of one turn."""

    begin: str
    """Text before each call (or, for ``array``, before the array of calls)."""
    end: str = ""
    """Text after each call."""
    separator: str = ""
    """Text between two calls (``array``: none, the array has its own commas)."""
    arguments_key: str = "arguments"
    """The call object's key for the arguments."""
    array: bool = False
    """The calls are one JSON array after ``begin``."""


CALL_SYNTAX: dict[str, CallSyntax] = {
    "hermes": CallSyntax("<tool_call>\n", "\n</tool_call>", separator="\n"),
    "mistral": CallSyntax("[TOOL_CALLS] ", array=True),
    "llama3_json": CallSyntax("", separator="; ", arguments_key="parameters"),
}
"""The call syntax of each parser of ``toolkit.tokenizer.tool_parsers`` (by its name)."""


def call_or_answer_spec(tools: list[ToolDefinition], parallel: bool, parser: str,
                        answer: GuidedSpec) -> GuidedSpec:
    """The constraint of a turn that calls ``tools`` (several when ``parallel``) in
    ``parser``'s syntax, or answers as ``answer`` (a json / json_object spec) asks."""
    syntax = CALL_SYNTAX.get(parser)
    if syntax is None:
        raise invalid("response_format", f"response_format cannot be combined with tools "
                      f"under the {parser!r} tool parser")
    schema = JSON_OBJECT_SCHEMA if answer.kind == "json_object" else json.loads(answer.value)
    tag = {"type": "structural_tag", "format": {"type": "or", "elements": [
        _json(schema), calls_format(tools, parallel, syntax)]}}
    return GuidedSpec("structural_tag", json.dumps(tag), answer.whitespace_pattern,
                      answer.param)


def calls_format(tools: list[ToolDefinition], parallel: bool,
                 syntax: CallSyntax) -> dict[str, Any]:
    """One or more calls (one unless ``parallel``) of any of ``tools``, as a structural
    tag format."""
    variants = [call_schema(tool, syntax.arguments_key) for tool in tools]
    if syntax.array:
        array = {"type": "array", "items": {"anyOf": variants}, "minItems": 1}
        if not parallel:
            array["maxItems"] = 1
        return _sequence([_const(syntax.begin), _json(array)])
    call = _sequence([_const(syntax.begin),
                      {"type": "or", "elements": [_json(v) for v in variants]},
                      _const(syntax.end)])
    if not parallel:
        return call
    more = {"type": "star", "content": _sequence([_const(syntax.separator), call])}
    return _sequence([call, more])


def call_schema(tool: ToolDefinition, arguments_key: str = "arguments") -> dict[str, Any]:
    """The JSON schema of one call object: its name, then arguments that follow the
    function's parameters."""
    function = tool.function
    return {"type": "object",
            "properties": {"name": {"const": function.name},
                           arguments_key: function.arguments_schema()},
            "required": ["name", arguments_key]}


def _json(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": schema}


def _const(text: str) -> dict[str, Any] | None:
    return {"type": "const_string", "value": text} if text else None


def _sequence(elements: list[dict[str, Any] | None]) -> dict[str, Any]:
    """A sequence of the elements given (None: nothing); a single element as is."""
    present = [e for e in elements if e is not None]
    return present[0] if len(present) == 1 else {"type": "sequence", "elements": present}
