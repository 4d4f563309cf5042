"""LoRA adapters made by ``peft`` served through the real loader and engine: every
position's distribution equals PEFT's merged model's (float32 tolerance), and a request's
tokens and logprobs are the same alone and in a mixed batch of the base model and four
adapters."""

from __future__ import annotations

import random

import pytest
import torch
from tiny_lora import ADAPTERS, VOCAB_SIZE, build_lora_runtime, merged_logits

from toolkit.protocol import SamplingParams

PROMPT = [1, 17, 5, 42, 9, 33, 12, 8, 60, 25, 3, 19, 44]
MAX_TOKENS = 6


@pytest.fixture(scope="module")
def lora_runtime(tiny_base, adapters):
    return build_lora_runtime(tiny_base, adapters, "lora.max_lora_rank=16")


def _params(lora_key: str | None, **kwargs) -> SamplingParams:
    return SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True,
                          logprobs=VOCAB_SIZE, lora_name=lora_key, **kwargs)


def _run(core, requests: dict[str, tuple[list[int], SamplingParams]]) -> dict[str, dict]:
    """Every request added at once, stepped to completion -> id: tokens and logprobs."""
    results = {rid: {"tokens": [], "logprobs": [], "prompt_logprobs": None}
               for rid in requests}
    for rid, (prompt, params) in requests.items():
        core.add_request(rid, prompt, params)
    while core.has_unfinished:
        for output in core.step():
            assert output.error is None, output.error
            result = results[output.request_id]
            result["tokens"] += output.new_token_ids
            result["logprobs"] += output.logprobs or []
            if output.prompt_logprobs is not None:
                result["prompt_logprobs"] = output.prompt_logprobs
    return results


def _distribution(entry) -> torch.Tensor:
    """A TokenLogprobs with every token in ``top`` -> [V] logprobs by token id."""
    values = torch.full((VOCAB_SIZE,), float("nan"))
    for token, logprob in entry.top:
        values[token] = logprob
    return values


@pytest.mark.parametrize("name", [None, *ADAPTERS])
def test_logprobs_equal_peft_merged_model(lora_runtime, tiny_base, adapters, name):
    key = None if name is None else lora_runtime.engine.lora.resolve(name)
    result = _run(lora_runtime.core, {"r": (PROMPT, _params(key, prompt_logprobs=VOCAB_SIZE))})["r"]
    sequence = PROMPT + result["tokens"]
    reference = torch.log_softmax(
        merged_logits(tiny_base, adapters.get(name), sequence), dim=-1)  # [T, V]
    served = [_distribution(e) for e in result["prompt_logprobs"][1:]]  # positions 0..P-2
    served += [_distribution(e) for e in result["logprobs"]]  # positions P-1 .. P+N-2
    torch.testing.assert_close(torch.stack(served), reference[:len(served)],
                               atol=2e-4, rtol=1e-4)
    assert result["tokens"] == reference[len(PROMPT) - 1:-1].argmax(-1).tolist()


def test_adapters_change_the_distribution(lora_runtime):
    base = _run(lora_runtime.core, {"b": (PROMPT, _params(None))})["b"]
    for name in ADAPTERS:
        key = lora_runtime.engine.lora.resolve(name)
        tuned = _run(lora_runtime.core, {"t": (PROMPT, _params(key))})["t"]
        assert not torch.allclose(_distribution(tuned["logprobs"][0]),
                                  _distribution(base["logprobs"][0]), atol=1e-3), name


def test_mixed_batch_equals_each_request_alone(lora_runtime):
    rng = random.Random(0)
    names = [None, *ADAPTERS]  # the base model and four adapters, interleaved
    requests = {}
    for i in range(15):
        name = names[i % len(names)]
        key = None if name is None else lora_runtime.engine.lora.resolve(name)
        prompt = [rng.randrange(1, VOCAB_SIZE) for _ in range(rng.randrange(2, 20))]
        requests[f"{name}-{i}"] = (prompt, _params(key))
    together = _run(lora_runtime.core, requests)
    for rid, request in requests.items():
        alone = _run(lora_runtime.core, {rid: request})[rid]
        assert alone["tokens"] == together[rid]["tokens"], rid
        assert alone["logprobs"] == together[rid]["logprobs"], rid
    assert not any(lora_runtime.core.num_request_states().values())  # adapters released


def test_two_slots_swapping_give_the_same_results(lora_runtime, tiny_base, adapters):
    """lora.max_loras=2, max_cpu_loras=2 over four adapters: the scheduler holds requests
    back, slots are rewritten and adapters read again from disk, and every request still
    gets what it gets with four slots."""
    small = build_lora_runtime(tiny_base, adapters, "lora.max_loras=2", "lora.max_cpu_loras=2")
    names = [None, *ADAPTERS]
    requests = {f"{name}-{i}": ([1 + i, 7, 30 + i, 2], name) for i, name in enumerate(names * 2)}

    def run(rt):
        return _run(rt.core, {rid: (prompt, _params(
            None if name is None else rt.engine.lora.resolve(name)))
            for rid, (prompt, name) in requests.items()})

    steps = []
    original = small.core.scheduler.schedule

    def recording_schedule():
        output = original()
        steps.append({item.request.lora_name for item in output.scheduled} - {None})
        return output

    small.core.scheduler.schedule = recording_schedule
    assert run(small) == run(lora_runtime)
    assert max(len(step) for step in steps) == 2


def test_deterministic_serving_holds_with_adapters(lora_runtime):
    """The start-up check covers the LoRA matmuls' shapes too (else the mixed-batch test
    above could pass by luck on this CPU)."""
    assert lora_runtime.engine.lora.batch_variance() is None
    assert lora_runtime.resolved.deterministic
