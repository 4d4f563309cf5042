"""Tool-call parsers, reasoning splitting and the chat stream state machine (no model)."""

from __future__ import annotations

import json

import pytest

from toolkit.api.openai.chat_output import ChoiceStream, split_message
from toolkit.api.openai.tools import ToolMode
from toolkit.tokenizer.reasoning import ReasoningStream, SplitReasoning, split_reasoning
from toolkit.tokenizer.tool_parsers import get_tool_parser

HERMES = get_tool_parser("hermes")


@pytest.mark.parametrize("name, text, content, calls", [
    ("hermes", 'Sure.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>',
     "Sure.", [("f", {"a": 1})]),
    ("hermes", ('<tool_call>{"name": "f", "arguments": {}}</tool_call>\n'
     '<tool_call>{"name": "g", "arguments": {"b": "x"}}</tool_call>'), "",
     [("f", {}), ("g", {"b": "x"})]),
    ("hermes", "<tool_call>{not json</tool_call>", "<tool_call>{not json</tool_call>", []),
    ("hermes", "no calls here", "no calls here", []),
    ("mistral", 'ok [TOOL_CALLS] [{"name": "f", "arguments": {"a": 2}}]', "ok",
     [("f", {"a": 2})]),
    ("llama3_json", '<|python_tag|>{"name": "f", "parameters": {"q": "x"}}', "",
     [("f", {"q": "x"})]),
    ("llama3_json", "plain answer", "plain answer", []),
])
def test_tool_parsers(name, text, content, calls):
    parsed = get_tool_parser(name).parse(text)
    assert parsed.content == content
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == calls


def test_unknown_parser_lists_the_valid_ones():
    with pytest.raises(ValueError, match="hermes"):
        get_tool_parser("nope")


def test_split_reasoning():
    assert split_reasoning("<think>hmm</think>\nanswer") == SplitReasoning("hmm", "answer")
    assert split_reasoning("hmm</think>answer") == SplitReasoning("hmm", "answer")
    assert split_reasoning("just an answer").reasoning is None


def test_reasoning_stream_holds_back_partial_tags():
    stream, pieces = ReasoningStream(), ["<th", "ink>ab", "c</thi", "nk>", "answer"]
    outputs = [stream.feed(p) for p in pieces] + [stream.feed("", final=True)]
    assert "".join(r for r, _ in outputs) == "abc"
    assert "".join(c for _, c in outputs) == "answer"


def _stream(mode: ToolMode, text: str, step: int, parser=HERMES):
    """Feed ``text`` in ``step``-character pieces; (content, calls by index, deltas)."""
    stream = ChoiceStream(mode, parser, reasoning=False)
    deltas = [d for i in range(0, len(text), step)
              for d in stream.feed(text[i:i + step], final=False)]
    deltas += stream.feed("", final=True)
    calls: dict[int, list] = {}
    for delta in deltas:
        for call in delta.tool_calls or ():
            calls.setdefault(call.index, []).append(call)
    return "".join(d.content or "" for d in deltas), calls, stream


def _check_openai_shape(parts: list) -> tuple[str, str]:
    """The first delta of a call has id, type and name; the rest only arguments."""
    first, rest = parts[0], parts[1:]
    assert first.id.startswith("call_") and first.type == "function" and first.function.name
    assert all(p.id is None and p.type is None and p.function.name is None for p in rest)
    return first.function.name, "".join(p.function.arguments or "" for p in parts)


def test_auto_stream_sends_content_then_calls():
    text = 'Hi <tool_call>{"name": "f", "arguments": {"a": 1, "b": [2, "}"]}}</tool_call>'
    content, calls, stream = _stream(ToolMode("auto"), text, 4)
    assert content == "Hi " and stream.num_calls == 1
    name, arguments = _check_openai_shape(calls[0])
    assert name == "f" and json.loads(arguments) == {"a": 1, "b": [2, "}"]}
    assert len(calls[0]) > 3  # the arguments came in several fragments


@pytest.mark.parametrize("mode, parser, text", [
    ("required", "hermes", ('[{"name": "f", "arguments": {"a": "x\\\\"}}, '
                           '{"name": "g", "arguments": {}}]')),
    ("auto", "hermes", ('<tool_call>\n{"name": "f", "arguments": {"a": "x\\\\"}}\n</tool_call>'
                       '\n<tool_call>{"arguments": {}, "name": "g"}</tool_call>')),
    ("auto", "mistral", ('[TOOL_CALLS] [{"name": "f", "arguments": {"a": "x\\\\"}}, '
                        '{"name": "g", "arguments": {}}]')),
    ("auto", "llama3_json", ('{"name": "f", "parameters": {"a": "x\\\\"}}; '
                            '{"name": "g", "parameters": {}}')),
])
@pytest.mark.parametrize("step", [1, 3, 1000])
def test_calls_stream_in_openai_shape(mode, parser, text, step):
    """Every format streams each call: name first, then fragments that join to the same
    arguments the whole-output parser reads."""
    content, calls, stream = _stream(ToolMode(mode), text, step, get_tool_parser(parser))
    whole = split_message(text, ToolMode(mode), get_tool_parser(parser), reasoning=False)
    assert content == "" and stream.num_calls == 2 == len(whole.calls)
    for index, call in enumerate(whole.calls):
        name, arguments = _check_openai_shape(calls[index])
        assert name == call.function.name
        assert json.loads(arguments) == json.loads(call.function.arguments)
    if step == 1:
        assert len(calls[0]) > 2


def test_stream_without_a_complete_call_sends_content():
    content, calls, stream = _stream(ToolMode("auto"), "Hi <tool_call>{not json", 3)
    assert content == "Hi <tool_call>{not json" and not calls and stream.num_calls == 0



@pytest.mark.parametrize("cut, calls", [
    ('[{"name": "f", "argu', [("f", "")]),
    ('[{"name": "f", "arguments": {"a": [1, "x}', [("f", '{"a": [1, "x}')]),
    ('[{"name": "f", "arguments": {}}, {"name": "gh', [("f", "{}"), ("ghi", "")]),
    ('[{"name": "', []),                                       # f, ghi or gx: unknown
    ('[{"name": "g', []),                                      # ghi or gx
    ('[{"name": "f", "arguments": {"name": "gh', [("f", '{"name": "gh')]),  # not a call
])
def test_required_output_cut_short_keeps_the_calls_begun(cut, calls):
    """max_tokens cut a forced call array: each call whose name was written (or can only
    be one tool's), with its arguments so far; never the raw array as content."""
    mode = ToolMode("required", names=("f", "ghi", "gx"))
    parts = split_message(cut, mode, HERMES, reasoning=False)
    assert [(c.function.name, c.function.arguments) for c in parts.calls] == calls
    assert parts.content == (None if calls else "")
    content, streamed, _ = _stream(mode, cut, 3)
    assert content == "" and len(streamed) == len(calls)
    for index, (name, arguments) in enumerate(calls):
        assert _check_openai_shape(streamed[index]) == (name, arguments)


def test_split_message_required_and_named():
    parts = split_message('[{"name": "f", "arguments": {"a": 1}}]', ToolMode("required"),
                          HERMES, reasoning=False)
    assert parts.content is None and parts.calls[0].function.name == "f"
    parts = split_message('<think>x</think>{"a": 2}', ToolMode("named", "g"), HERMES,
                          reasoning=True)
    assert parts.reasoning == "x" and json.loads(parts.calls[0].function.arguments) == {"a": 2}
