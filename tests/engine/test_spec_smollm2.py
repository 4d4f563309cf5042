"""Speculative decoding on the real SmolLM2 weights: greedy outputs equal plain decoding,
guided requests stay valid (one bitmask row per draft, grammar rollback), stop strings
cut inside accepted runs. Kept short: every SmolLM2 step costs real CPU time (stop strings
and logprobs with drafts are also covered on tiny models in tests/speculative)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from toolkit.protocol import SamplingParams
from toolkit.protocol.guided import GuidedSpec
from toolkit.runtime import rebuild_engine

PASSAGE = ("The lighthouse keeper climbed the spiral stairs every evening at dusk, "
           "carrying a brass lantern and a small notebook.")
PROMPTS = [
    f'Repeat this sentence exactly: "{PASSAGE}"',
    f'Quote the first half of this text: "{PASSAGE}"',
    "Count from one to twelve in words, separated by commas.",
]


@pytest.fixture(scope="module")
def cores(own_runtime):
    """A plain and an ngram engine core around the session's loaded SmolLM2 (new cores,
    so the session AsyncEngine's own core is never driven from here)."""
    cfg = own_runtime.config
    plain = rebuild_engine(own_runtime, cfg)
    ngram = rebuild_engine(own_runtime, replace(cfg, speculative=replace(
        cfg.speculative, method="ngram", num_speculative_tokens=4)))
    return plain.core, ngram.core


def chat(core, text: str) -> list[int]:
    return core.output_processor.tokenizer.apply_chat_template([{"role": "user", "content": text}])


def run(core, requests):
    results = {rid: {"tokens": [], "text": "", "finish": None} for rid in requests}
    for rid, (prompt, params) in requests.items():
        core.add_request(rid, prompt, params)
    while core.has_unfinished:
        for out in core.step():
            results[out.request_id]["tokens"] += out.new_token_ids
            results[out.request_id]["text"] += out.new_text
            results[out.request_id]["finish"] = out.finish_reason
    return results


def test_greedy_smollm2_identical_with_ngram(cores):
    plain_core, spec_core = cores
    params = SamplingParams(max_tokens=12, temperature=0.0)
    requests = {f"p{i}": (chat(plain_core, p), params) for i, p in enumerate(PROMPTS)}
    accepted_before = spec_core.metrics.num_accepted_tokens
    assert run(spec_core, requests) == run(plain_core, requests)
    assert spec_core.metrics.num_accepted_tokens > accepted_before


def test_guided_regex_with_ngram_stays_valid(cores):
    plain_core, spec_core = cores
    regex = GuidedSpec("regex", "(hello ){4}world", param="guided_regex")
    prompt = chat(plain_core, "Say hello four times, then world.")
    requests = {
        "re": (prompt, SamplingParams(max_tokens=16, temperature=0.0, guided=regex)),
        # the grammar allows any tokenization, down to one character a token: 26 + EOS
        "sampled": (prompt, SamplingParams(max_tokens=32, temperature=1.0, seed=3,
                                           guided=regex)),
    }
    drafts_before = spec_core.metrics.num_draft_tokens
    spec = run(spec_core, requests)
    assert re.fullmatch("(hello ){4}world", spec["re"]["text"])
    assert re.fullmatch("(hello ){4}world", spec["sampled"]["text"])
    plain = run(plain_core, {"re": requests["re"]})
    assert spec["re"] == plain["re"]
    assert spec_core.metrics.num_draft_tokens > drafts_before
    assert not any(spec_core.num_request_states().values())


def test_stop_string_with_ngram_matches_plain(cores):
    plain_core, spec_core = cores
    prompt = chat(plain_core, PROMPTS[0])
    params = SamplingParams(max_tokens=24, temperature=0.0, stop=("spiral",))
    requests = {"s": (prompt, params)}
    spec, plain = run(spec_core, requests), run(plain_core, requests)
    assert spec == plain
    assert spec["s"]["finish"] == "stop" and "spiral" not in spec["s"]["text"]
