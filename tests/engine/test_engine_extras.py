"""Engine-level sampling extras on the real SmolLM2 weights: seeds in a batch of 8,
min_tokens, logprobs, prompt logprobs, include_stop_str_in_output."""

from __future__ import annotations

import pytest

from toolkit.compose import compose_config
from toolkit.protocol import SamplingParams
from toolkit.runtime import build_runtime

pytestmark = pytest.mark.slow  # loads the real SmolLM2

PROMPTS = ["Name a colour.", "Count to five.", "Say hi.", "What is 2 + 2?",
           "Write a word.", "Name a fruit.", "Spell cat.", "Say yes."]


@pytest.fixture(scope="module")
def core():
    overrides = ["device=cpu", "model.dtype=float32", "model.max_model_len=256", "cache.num_pages=64",
                 "scheduler.max_num_batched_tokens=128"]
    return build_runtime(compose_config(overrides)).core


def chat_ids(core, text: str) -> list[int]:
    return core.output_processor.tokenizer.apply_chat_template([{"role": "user", "content": text}])


def run(core, requests: dict[str, tuple[list[int], SamplingParams]]) -> dict[str, dict]:
    results = {rid: {"text": "", "tokens": [], "logprobs": [], "prompt_logprobs": None,
                     "cumulative": None, "finish_reason": None} for rid in requests}
    for rid, (prompt_ids, params) in requests.items():
        core.add_request(rid, prompt_ids, params)
    while core.has_unfinished:
        for output in core.step():
            result = results[output.request_id]
            result["text"] += output.new_text
            result["tokens"] += output.new_token_ids
            result["logprobs"] += output.logprobs or []
            result["prompt_logprobs"] = output.prompt_logprobs or result["prompt_logprobs"]
            result["cumulative"] = output.cumulative_logprob
            result["finish_reason"] = output.finish_reason
    return results


def test_seeded_request_with_extras_is_identical_alone_and_in_a_batch_of_8(core):
    seeded = SamplingParams(max_tokens=10, temperature=1.0, seed=3, top_k=40, min_p=0.02,
                            top_a=0.01, typical_p=0.95, smoothing_factor=0.2,
                            repetition_penalty=1.1, presence_penalty=0.3)
    prompt = chat_ids(core, PROMPTS[0])
    alone = run(core, {"s": (prompt, seeded)})["s"]["tokens"]
    others = {f"o{i}": (chat_ids(core, p), SamplingParams(max_tokens=10, temperature=0.8,
                                                          top_p=0.9))
              for i, p in enumerate(PROMPTS[1:])}
    assert run(core, {"s": (prompt, seeded), **others})["s"]["tokens"] == alone


def test_min_tokens_holds_eos_back(core):
    prompt = chat_ids(core, "Reply with just the word yes.")
    free = run(core, {"f": (prompt, SamplingParams(max_tokens=40, temperature=0.0))})["f"]
    assert free["finish_reason"] == "stop" and len(free["tokens"]) < 30
    held = SamplingParams(max_tokens=40, temperature=0.0, min_tokens=len(free["tokens"]) + 3)
    result = run(core, {"m": (prompt, held)})["m"]
    assert len(result["tokens"]) >= held.min_tokens
    assert not set(result["tokens"][: held.min_tokens - 1]) & set(core.eos_token_ids)


def test_logprobs_follow_the_sampled_tokens(core):
    prompt = chat_ids(core, PROMPTS[3])
    params = SamplingParams(max_tokens=6, temperature=0.0, logprobs=3, prompt_logprobs=2)
    result = run(core, {"l": (prompt, params)})["l"]
    entries = result["logprobs"]
    assert [e.token_id for e in entries] == result["tokens"]
    assert all(e.rank == 1 and len(e.top) == 3 and e.top[0][0] == e.token_id for e in entries)
    assert result["cumulative"] == pytest.approx(sum(e.logprob for e in entries))
    prompt_entries = result["prompt_logprobs"]
    assert len(prompt_entries) == len(prompt) and prompt_entries[0] is None
    assert [e.token_id for e in prompt_entries[1:]] == prompt[1:]
    assert all(len(e.top) == 2 and e.logprob <= 0 for e in prompt_entries[1:])


def test_prompt_logprobs_survive_chunked_prefill(core):
    prompt = chat_ids(core, "Tell me a long story about the sea. " * 12)
    assert len(prompt) > 128, "the prompt must span several prefill chunks"
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    entries = run(core, {"c": (prompt, params)})["c"]["prompt_logprobs"]
    assert entries[0] is None and all(e is not None for e in entries[1:])
    assert [e.token_id for e in entries[1:]] == prompt[1:]


def test_include_stop_str_in_output(core):
    prompt = chat_ids(core, "Explain what a hash table is.")
    full = run(core, {"f": (prompt, SamplingParams(max_tokens=20, temperature=0.0))})["f"]
    stop = full["text"].split()[3]
    params = SamplingParams(max_tokens=20, temperature=0.0, stop=(stop,),
                            include_stop_str_in_output=True)
    cut = run(core, {"c": (prompt, params)})["c"]
    assert cut["finish_reason"] == "stop"
    assert cut["text"] == full["text"][: full["text"].index(stop) + len(stop)]
