"""``GuidedSpec`` -> the xgrammar compile call that builds its grammar."""

from __future__ import annotations

import json

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
    return compiler.compile_structural_tag(spec.value)
