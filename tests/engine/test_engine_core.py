"""EngineCore on the real SmolLM2 weights (float32, a deliberately small KV cache)."""

from __future__ import annotations

import pytest

from toolkit.compose import compose_config
from toolkit.protocol import SamplingParams
from toolkit.runtime import build_runtime

pytestmark = pytest.mark.slow  # loads the real SmolLM2

PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about autumn leaves.",
    "Explain what a hash table is.",
    "List three colours of the rainbow.",
    "Why is the sky blue?",
    "Say hello in Spanish.",
]
NUM_PAGES = 8  # 128 tokens of KV: six ~50-token requests cannot all fit at once


@pytest.fixture(scope="module")
def core():
    overrides = ["device=cpu", "model.dtype=float32", "model.max_model_len=128",
                 f"cache.num_pages={NUM_PAGES}", "cache.page_size=16",
                 "scheduler.max_num_batched_tokens=64"]
    return build_runtime(compose_config(overrides)).core


def chat_ids(core, text: str) -> list[int]:
    return core.output_processor.tokenizer.apply_chat_template([{"role": "user", "content": text}])


def run(core, requests: dict[str, tuple[list[int], SamplingParams]]) -> dict[str, dict]:
    """Add all requests at once, step to completion, collect text, tokens, finish reason."""
    results = {rid: {"text": "", "tokens": [], "finish_reason": None} for rid in requests}
    for rid, (prompt_ids, params) in requests.items():
        core.add_request(rid, prompt_ids, params)
    preempted = 0
    while core.has_unfinished:
        before = sum(r.num_preemptions for r in core.scheduler.requests.values())
        for output in core.step():
            result = results[output.request_id]
            result["text"] += output.new_text
            result["tokens"] += output.new_token_ids
            result["finish_reason"] = output.finish_reason
        preempted += sum(r.num_preemptions for r in core.scheduler.requests.values()) > before
    results["_preempted"] = preempted
    return results


def test_batched_with_preemption_matches_one_by_one_greedy(core):
    params = SamplingParams(max_tokens=24, temperature=0.0)
    prompts = {f"g{i}": (chat_ids(core, p), params) for i, p in enumerate(PROMPTS)}
    alone = {rid: run(core, {rid: prompt})[rid] for rid, prompt in prompts.items()}
    together = run(core, prompts)
    assert together.pop("_preempted") > 0, "the small cache should have forced preemption"
    for rid in prompts:
        assert together[rid]["tokens"] == alone[rid]["tokens"], rid
        assert together[rid]["text"] == alone[rid]["text"]
        assert together[rid]["finish_reason"] in ("stop", "length")
    assert core.scheduler.page_manager.num_free_pages == NUM_PAGES


def test_seeded_sampling_is_reproducible_whatever_the_batch(core):
    seeded = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=7)
    prompt = chat_ids(core, PROMPTS[1])
    alone = run(core, {"s": (prompt, seeded)})["s"]["tokens"]
    others = {f"o{i}": (chat_ids(core, p), SamplingParams(max_tokens=16, temperature=1.0))
              for i, p in enumerate(PROMPTS[2:5])}
    batched = run(core, {"s": (prompt, seeded), **others})["s"]["tokens"]
    assert batched == alone
    reseeded = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=8)
    assert run(core, {"s": (prompt, reseeded)})["s"]["tokens"] != alone


def test_stop_string_cuts_the_text_and_finishes_with_stop(core):
    prompt = chat_ids(core, PROMPTS[2])
    full = run(core, {"f": (prompt, SamplingParams(max_tokens=24, temperature=0.0))})["f"]
    words = full["text"].split()
    assert len(words) > 4
    stop = words[3]
    cut = run(core, {"c": (prompt, SamplingParams(max_tokens=24, temperature=0.0,
                                                  stop=(stop,)))})["c"]
    assert cut["finish_reason"] == "stop"
    assert cut["text"] == full["text"][: full["text"].index(stop)]


def test_stop_token_ids_and_max_tokens(core):
    prompt = chat_ids(core, PROMPTS[0])
    full = run(core, {"f": (prompt, SamplingParams(max_tokens=6, temperature=0.0))})["f"]
    assert full["finish_reason"] == "length" and len(full["tokens"]) == 6
    stop_id = full["tokens"][2]
    cut = run(core, {"c": (prompt, SamplingParams(max_tokens=6, temperature=0.0,
                                                  stop_token_ids=(stop_id,)))})["c"]
    assert cut["finish_reason"] == "stop" and cut["tokens"] == full["tokens"][:3]


def test_eos_from_the_generation_config_stops(core):
    assert core.eos_token_ids, "EOS ids must come from the checkpoint"
    prompt = chat_ids(core, "Reply with just the word yes.")
    result = run(core, {"e": (prompt, SamplingParams(max_tokens=40, temperature=0.0))})["e"]
    assert result["finish_reason"] == "stop"
    assert result["tokens"][-1] in core.eos_token_ids


def test_abort_frees_every_page(core):
    params = SamplingParams(max_tokens=50, temperature=0.0)
    for i, text in enumerate(PROMPTS[:3]):
        core.add_request(f"a{i}", chat_ids(core, text), params)
    for _ in range(3):
        core.step()
    assert core.scheduler.page_manager.num_free_pages < NUM_PAGES
    for i in range(3):
        core.abort_request(f"a{i}")
    assert not core.has_unfinished
    assert core.scheduler.page_manager.num_free_pages == NUM_PAGES
