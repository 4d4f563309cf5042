"""Tool-call parsers, reasoning splitting and the chat stream state machine (no model)."""

from __future__ import annotations

import json

import pytest

from toolkit.api.chat_output import ChoiceStream, split_message
from toolkit.api.tools import ToolMode
from toolkit.tokenizer.reasoning import ReasoningStream, SplitReasoning, split_reasoning
from toolkit.tokenizer.tool_parsers import get_tool_parser

HERMES = get_tool_parser("hermes")


@pytest.mark.parametrize("name, text, content, calls", [
    ("hermes", 'Sure.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>',
     "Sure.", [("f", {"a": 1})]),
    ("hermes", '<tool_call>{"name": "f", "arguments": {}}</tool_call>\n'
     '<tool_call>{"name": "g", "arguments": {"b": "x"}}</tool_call>', "",
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


def test_auto_stream_sends_content_then_calls():
    stream = ChoiceStream(ToolMode("auto"), HERMES, reasoning=False)
    text = 'Hi <tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>'
    deltas = [d for i in range(0, len(text), 4)
              for d in stream.feed(text[i:i + 4], final=False)]
    deltas += stream.feed("", final=True)
    content = "".join(d.content or "" for d in deltas)
    calls = [c for d in deltas for c in d.tool_calls or ()]
    assert content == "Hi " and stream.num_calls == 1
    assert calls[0].function.name == "f" and json.loads(calls[0].function.arguments) == {"a": 1}


def test_split_message_required_and_named():
    parts = split_message('[{"name": "f", "arguments": {"a": 1}}]', ToolMode("required"),
                          HERMES, reasoning=False)
    assert parts.content is None and parts.calls[0].function.name == "f"
    parts = split_message('<think>x</think>{"a": 2}', ToolMode("named", "g"), HERMES,
                          reasoning=True)
    assert parts.reasoning == "x" and json.loads(parts.calls[0].function.arguments) == {"a": 2}
