"""``GuidedSpec`` -> the xgrammar compile call that builds its grammar."""

from __future__ import annotations

import json
from typing import Any

import xgrammar as xgr

from toolkit.guided.whitespace import json_ebnf
from toolkit.protocol.guided import GuidedSpec

JSON_OBJECT_SCHEMA = '{"type": "object"}'
"""response_format json_object: any JSON object."""


def choice_ebnf(choices: list[str]) -> str:
    """An EBNF grammar whose language is exactly ``choices``."""
    if not choices or not all(isinstance(c, str) and c for c in choices):
        raise ValueError("guided_choice must be a non-empty list of non-empty strings")
    return "root ::= " + " | ".join(json.dumps(c) for c in choices)


def schema_ebnf(schema_json: str, whitespace_pattern: str | None = None) -> str:
    """The EBNF a JSON schema compiles to here: strict, with compact single spaces (or the
    whitespace pattern's whitespace)."""
    if whitespace_pattern is not None:
        return json_ebnf(schema_json, whitespace_pattern)
    return str(xgr.Grammar.from_json_schema(schema_json, any_whitespace=False,
                                            strict_mode=True))


def compact_structural_tag(tag_json: str, whitespace_pattern: str | None = None) -> str:
    """A structural tag whose plain JSON-schema formats (style json, no other option) are
    replaced by the grammar ``schema_ebnf`` gives them, so JSON inside a structural tag is
    written as any other JSON constraint (xgrammar's own format allows any whitespace)."""
    return json.dumps(_compact(json.loads(tag_json), whitespace_pattern))


def _compact(node: Any, whitespace_pattern: str | None) -> Any:
    if isinstance(node, list):
        return [_compact(item, whitespace_pattern) for item in node]
    if not isinstance(node, dict):
        return node
    if is_plain_json_format(node):
        schema = json.dumps(node["json_schema"])
        return {"type": "grammar", "grammar": schema_ebnf(schema, whitespace_pattern)}
    return {key: _compact(value, whitespace_pattern) for key, value in node.items()}


def is_plain_json_format(node: dict) -> bool:
    """A structural tag's ``{"type": "json_schema", "json_schema": ...}`` format with no
    option but ``style: json``."""
    return (node.get("type") == "json_schema" and "json_schema" in node
            and set(node) <= {"type", "json_schema", "style"}
            and node.get("style", "json") == "json")


def compile_spec(compiler: xgr.GrammarCompiler, spec: GuidedSpec) -> xgr.CompiledGrammar:
    """Compile ``spec``; raises whatever xgrammar raises on a bad schema, regex or grammar
    (RuntimeError, ValueError), ValueError for a malformed choice list, or
    ``WhitespacePatternError`` for a whitespace pattern that cannot be honoured."""
    if spec.kind in ("json", "json_object"):
        schema = JSON_OBJECT_SCHEMA if spec.kind == "json_object" else spec.value
        if spec.whitespace_pattern is not None:
            return compiler.compile_grammar(json_ebnf(schema, spec.whitespace_pattern))
        return compiler.compile_json_schema(schema, any_whitespace=False, strict_mode=True)
    if spec.kind == "regex":
        return compiler.compile_regex(spec.value)
    if spec.kind == "choice":
        return compiler.compile_grammar(choice_ebnf(json.loads(spec.value)))
    if spec.kind == "grammar":
        return compiler.compile_grammar(spec.value)
    if spec.kind == "lark":
        return compiler.compile_lark(spec.value)
    return compiler.compile_structural_tag(compact_structural_tag(spec.value,
                                                                  spec.whitespace_pattern))
