"""tools + response_format under tool_choice=auto: the turn's grammar allows a tool call in
the tool parser's syntax or an answer in the schema, and nothing else; a forced tool choice
governs over response_format. The grammar is compiled by the real ``GuidedCompiler`` over
SmolLM2's tokenizer and driven token by token with xgrammar's matcher (no model)."""

from __future__ import annotations

import json

import pytest
import torch
import xgrammar as xgr

from toolkit.api.http.errors import APIError
from toolkit.api.openai.chat_output import split_message
from toolkit.api.openai.guided import guided_spec
from toolkit.api.openai.protocol import ChatCompletionRequest
from toolkit.api.openai.tools import ToolMode, chat_constraint, tool_mode
from toolkit.guided.compiler import GuidedCompiler, GuidedSpecError
from toolkit.tokenizer.tool_parsers import get_tool_parser

WEATHER = {"type": "object",
           "properties": {"city": {"type": "string", "maxLength": 12},
                          "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"]}
TIME = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
        "required": ["zone"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": TIME}}]
ANSWER = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]},
                                           "confidence": {"type": "integer", "minimum": 0,
                                                          "maximum": 9}},
          "required": ["answer", "confidence"]}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "reply", "schema": ANSWER}}

CALL = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
        '"unit": "celsius"}}\n</tool_call>')
SECOND_CALL = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'
REPLY = '{"answer": "yes", "confidence": 7}'


def request(**fields) -> ChatCompletionRequest:
    body = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS,
            "response_format": SCHEMA_FORMAT, **fields}
    return ChatCompletionRequest.model_validate(body)


def constraint(body: ChatCompletionRequest, parser: str = "hermes"):
    return chat_constraint(body, tool_mode(body), guided_spec(body), parser)


@pytest.fixture(scope="module")
def compiler(smollm2_tokenizer):
    hf = smollm2_tokenizer.hf
    compiler = GuidedCompiler(hf, len(hf), (hf.eos_token_id,), max_compile_workers=1)
    yield compiler
    compiler.close()


def run_tokens(compiler: GuidedCompiler, tokenizer, spec, text: str) -> bool:
    """Drive a matcher over ``text``'s tokens, each checked against the bitmask first,
    then EOS; True when every token was allowed and the grammar then terminated."""
    matcher = xgr.GrammarMatcher(compiler.compile(spec))
    bitmask = xgr.allocate_token_bitmask(1, compiler.vocab_size)
    eos = tokenizer.hf.eos_token_id
    for token in [*tokenizer.encode(text, add_special_tokens=False), eos]:
        matcher.fill_next_token_bitmask(bitmask)
        if not _allowed(bitmask, token) or not matcher.accept_token(token):
            return False
    return matcher.is_terminated()


def _allowed(bitmask: torch.Tensor, token: int) -> bool:
    return bool((int(bitmask[0, token // 32]) >> (token % 32)) & 1)


def test_auto_with_response_format_is_one_structural_tag():
    spec = constraint(request())
    assert spec.kind == "structural_tag" and spec.param == "response_format.json_schema"
    tag = json.loads(spec.value)
    answer, calls = tag["format"]["elements"]
    assert tag["format"]["type"] == "or" and answer["json_schema"] == ANSWER
    assert calls["type"] == "sequence"  # one call, then more (parallel_tool_calls default)


@pytest.mark.parametrize("text", [CALL, REPLY, f"{CALL}\n{SECOND_CALL}"])
def test_each_branch_is_taken_token_by_token(compiler, smollm2_tokenizer, text):
    assert run_tokens(compiler, smollm2_tokenizer, constraint(request()), text)


@pytest.mark.parametrize("text", [
    "Sure! " + CALL,                                   # free text before the call
    f"{CALL}\n{REPLY}",                                # a call, then an answer
    '{"answer": "maybe", "confidence": 7}',            # not in the schema
    '{"answer":"yes","confidence":7}',                 # not the compact whitespace
    CALL.replace("Paris", "Paris, the city of light"),  # arguments out of their schema
    CALL.replace("get_weather", "get_wind"),           # no such tool
    "The answer is yes.",
])
def test_anything_else_is_refused(compiler, smollm2_tokenizer, text):
    assert not run_tokens(compiler, smollm2_tokenizer, constraint(request()), text)


def test_one_call_when_parallel_calls_are_off(compiler, smollm2_tokenizer):
    spec = constraint(request(parallel_tool_calls=False))
    assert run_tokens(compiler, smollm2_tokenizer, spec, CALL)
    assert not run_tokens(compiler, smollm2_tokenizer, spec, f"{CALL}\n{SECOND_CALL}")


@pytest.mark.parametrize("parser, calls", [
    ("mistral", '[TOOL_CALLS] [{"name": "get_time", "arguments": {"zone": "CET"}}, '
                '{"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}]'),
    ("llama3_json", '{"name": "get_time", "parameters": {"zone": "CET"}}; '
                    '{"name": "get_weather", "parameters": {"city": "Rome", "unit": "celsius"}}'),
])
def test_calls_follow_the_tool_parsers_syntax(compiler, smollm2_tokenizer, parser, calls):
    spec = constraint(request(), parser)
    assert run_tokens(compiler, smollm2_tokenizer, spec, calls)
    assert run_tokens(compiler, smollm2_tokenizer, spec, REPLY)
    assert not run_tokens(compiler, smollm2_tokenizer, spec, CALL)
    parsed = split_message(calls, ToolMode("auto"), get_tool_parser(parser), reasoning=False)
    assert [c.function.name for c in parsed.calls] == ["get_time", "get_weather"]


def test_json_object_answers_any_object(compiler, smollm2_tokenizer):
    spec = constraint(request(response_format={"type": "json_object"}))
    assert spec.param == "response_format"
    for text in (CALL, '{"anything": [1, 2]}'):
        assert run_tokens(compiler, smollm2_tokenizer, spec, text)
    assert not run_tokens(compiler, smollm2_tokenizer, spec, "[1, 2]")


def test_the_parsed_message_of_each_branch():
    hermes = get_tool_parser("hermes")
    called = split_message(CALL, ToolMode("auto"), hermes, reasoning=False)
    assert called.content is None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in called.calls] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"})]
    answered = split_message(REPLY, ToolMode("auto"), hermes, reasoning=False)
    assert answered.content == REPLY and answered.calls == []


def test_a_forced_tool_choice_governs_the_turn():
    required = constraint(request(tool_choice="required"))
    assert required.kind == "json" and required.param == "tools"
    assert json.loads(required.value)["type"] == "array"
    named = constraint(request(tool_choice={"type": "function",
                                            "function": {"name": "get_time"}}))
    assert named.kind == "json" and json.loads(named.value) == TIME
    assert constraint(request(tool_choice="none")).kind == "json"  # the schema alone
    with pytest.raises(APIError) as caught:
        constraint(request(response_format=None, tool_choice="required",
                           guided_regex="a+"))
    assert caught.value.param == "tool_choice"


def test_guided_extras_under_auto_stay_as_they_are():
    spec = constraint(request(response_format=None, guided_regex="(yes|no)"))
    assert spec.kind == "regex"


def test_an_unenforceable_keyword_is_refused_naming_the_field(compiler):
    loose = {**ANSWER, "properties": {**ANSWER["properties"],
                                      "tags": {"type": "array", "uniqueItems": True}}}
    body = request(response_format={"type": "json_schema",
                                     "json_schema": {"name": "r", "schema": loose}})
    with pytest.raises(GuidedSpecError) as caught:
        compiler.compile(constraint(body))
    assert caught.value.param == "response_format.json_schema"
    assert "uniqueItems" in str(caught.value)
