"""Every guided output of SmolLM2, sampled at temperature 1, matches its constraint."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from schemas import CHOICES, REGEXES, SCHEMAS, validate

from toolkit.protocol import GuidedSpec, SamplingParams

pytestmark = pytest.mark.slow

MAX_TOKENS = 256
"""Every instance in the corpus is far shorter; unbounded decimals get room to end."""


def _prompt(engine, text: str) -> list[int]:
    messages = [{"role": "user", "content": text}]
    return engine.tokenizer.apply_chat_template(messages)


async def _run(engine, name: str, prompt: str, spec: GuidedSpec, seed: int) -> tuple[str, str]:
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, seed=seed, guided=spec)
    text, reason = "", None
    async for output in engine.generate(name, _prompt(engine, prompt), params):
        text += output.new_text
        reason = output.finish_reason
    return text, reason


async def test_corpus_outputs_match(engine):
    """JSON schemas, regexes and choices, all in one batch with unguided requests."""
    jobs = [("json", s, GuidedSpec("json", json.dumps(s))) for s in SCHEMAS]
    jobs += [("regex", r, GuidedSpec("regex", r, param="guided_regex")) for r in REGEXES]
    jobs += [("choice", c, GuidedSpec("choice", json.dumps(c), param="guided_choice"))
             for c in CHOICES]
    plain = SamplingParams(max_tokens=24, temperature=1.0, seed=1)
    unguided = [engine.generate(f"plain-{i}", _prompt(engine, "Tell me a story."), plain)
                for i in range(4)]
    runs = [_run(engine, f"corpus-{i}", "Answer with an example value.", spec, seed=i)
            for i, (_, _, spec) in enumerate(jobs)]
    results = await asyncio.gather(*runs, *[_drain(s) for s in unguided])
    assert len(SCHEMAS) >= 30
    for (kind, constraint, _), (text, reason) in zip(jobs, results):
        assert reason == "stop", (kind, constraint, text)
        if kind == "json":
            validate(json.loads(text), constraint)
        elif kind == "regex":
            assert re.fullmatch(constraint, text), (constraint, text)
        else:
            assert text in constraint


async def _drain(stream) -> tuple[str, str]:
    text, reason = "", None
    async for output in stream:
        text += output.new_text
        reason = output.finish_reason
    return text, reason
