"""A PEFT adapter on the real SmolLM2 (random, non-zero lora_B) served in float32 through
the real loader and engine equals PEFT's merged model (slow tier: loads SmolLM2)."""

from __future__ import annotations

import torch
from tiny_lora import build_lora_runtime, make_adapter, merged_logits

from toolkit.protocol import SamplingParams

PROMPT = [1, 9690, 314, 253, 1789, 282, 19546, 30, 14875, 1224]
NUM_TOP = 20


def test_smollm2_adapter_matches_peft_merged_model(smollm2_dir, tmp_path):
    make_adapter(smollm2_dir, tmp_path / "lora", 7, r=8, lora_alpha=16, use_rslora=True,
                 target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"])
    runtime = build_lora_runtime(smollm2_dir, {"tuned": tmp_path / "lora"},
                                 "cache.num_pages=64")
    core = runtime.core
    core.add_request("r", PROMPT, SamplingParams(
        max_tokens=1, temperature=0.0, prompt_logprobs=NUM_TOP,
        lora_name=runtime.engine.lora.resolve("tuned")))
    prompt_logprobs = None
    while core.has_unfinished:
        for output in core.step():
            prompt_logprobs = output.prompt_logprobs or prompt_logprobs
    reference = torch.log_softmax(merged_logits(smollm2_dir, tmp_path / "lora", PROMPT), -1)
    base = torch.log_softmax(merged_logits(smollm2_dir, None, PROMPT), -1)
    for position, entry in enumerate(prompt_logprobs[1:]):
        tokens = torch.tensor([token for token, _ in entry.top])
        served = torch.tensor([logprob for _, logprob in entry.top])
        torch.testing.assert_close(served, reference[position, tokens], atol=2e-3, rtol=1e-3)
        assert tokens[0] == reference[position].argmax()
    assert not torch.allclose(reference, base, atol=0.1)
