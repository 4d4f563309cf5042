"""guided_whitespace_pattern is compiled into the grammar: only its whitespace is allowed."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
import xgrammar as xgr
from schemas import I, S, obj, validate

from toolkit.guided.compiler import GuidedSpecError
from toolkit.protocol import GuidedSpec, SamplingParams

pytestmark = pytest.mark.slow

SCHEMA = obj({"name": S, "tags": {"type": "array", "items": S, "maxItems": 3},
              "point": obj({"x": I, "y": I})})
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
SINGLE_SPACES = "[ ]?"
"""At most one space between tokens, never a newline or a tab."""


def _accepts(grammar, text: str) -> bool:
    matcher = xgr.GrammarMatcher(grammar)
    return matcher.accept_string(text) and matcher.is_completed()


def test_grammar_admits_exactly_the_patterns_whitespace(runtime):
    grammar = runtime.core.guided.compile(GuidedSpec("json", json.dumps(SCHEMA),
                                                     SINGLE_SPACES))
    assert _accepts(grammar, '{"name":"a","tags":[],"point":{"x":1,"y":2}}')
    assert _accepts(grammar, '{ "name" : "a" , "tags" : [ "b" ] , "point" : '
                             '{ "x" : 1 , "y" : 2 } }')
    for bad in ('{\n"name":"a","tags":[],"point":{"x":1,"y":2}}',
                '{"name":  "a","tags":[],"point":{"x":1,"y":2}}',
                '{"name":"a","tags":[],"point":{"x":1,"y":2}\t}'):
        assert not _accepts(grammar, bad), bad
    newlines = runtime.core.guided.compile(GuidedSpec("json", json.dumps(SCHEMA), r"\n?"))
    assert _accepts(newlines, '{\n"name":"a","tags":[],"point":{"x":1,"y":2}}')
    assert not _accepts(newlines, '{ "name":"a","tags":[],"point":{"x":1,"y":2}}')


@pytest.mark.parametrize("pattern", [r"\s*", "[a ]*", ".", "[^x]", "("])
def test_patterns_that_cannot_be_honoured_are_refused(runtime, pattern):
    with pytest.raises(GuidedSpecError) as caught:
        runtime.core.guided.compile(GuidedSpec("json", json.dumps(SCHEMA), pattern))
    assert caught.value.param == "guided_whitespace_pattern"


async def test_sampled_outputs_use_only_the_patterns_whitespace(engine):
    """Asked for pretty-printed JSON at temperature 1, the model still writes single
    spaces only, and every output validates."""
    spec = GuidedSpec("json", json.dumps(SCHEMA), SINGLE_SPACES)
    prompt = engine.tokenizer.apply_chat_template([{"role": "user", "content": (
        "Give an example person as pretty-printed JSON, indented, one key per line.")}])

    async def run(seed: int) -> str:
        params = SamplingParams(max_tokens=160, temperature=1.0, seed=seed, guided=spec)
        text = ""
        async for output in engine.generate(f"ws-{seed}", prompt, params):
            text += output.new_text
        return text

    texts = await asyncio.gather(*[run(seed) for seed in range(6)])
    for text in texts:
        validate(json.loads(text), SCHEMA)
        between_tokens = JSON_STRING.sub('""', text)  # string contents may hold any spaces
        assert "\n" not in between_tokens and "\t" not in between_tokens, text
        assert "  " not in between_tokens, text
