"""LoRA is model-agnostic: PEFT adapters on tiny Phi-3 (a fused qkv_proj / gate_up_proj
checkpoint, the adapter targets the fused modules), Qwen3 and Gemma 2 served through the
real loader and engine match PEFT's merged model."""

from __future__ import annotations

import pytest
import torch
import transformers
from tiny_lora import (
    VOCAB_SIZE,
    build_lora_runtime,
    make_adapter,
    merged_logits,
    save_word_tokenizer,
)

from toolkit.protocol import SamplingParams

SHAPE = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
             eos_token_id=0, bos_token_id=1, pad_token_id=0)
ARCHITECTURES = {
    "phi3": (transformers.Phi3Config, {}, ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]),
    "qwen3": (transformers.Qwen3Config, {"head_dim": 16},
              ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "gemma2": (transformers.Gemma2Config, {"head_dim": 16}, ["q_proj", "v_proj", "down_proj"]),
}
PROMPT = [1, 17, 5, 42, 9, 33, 12, 8, 60]


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_adapter_matches_peft_merged_model(tmp_path, architecture):
    config_class, extra, targets = ARCHITECTURES[architecture]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config_class(**SHAPE, **extra))
    model.save_pretrained(tmp_path / "base")
    save_word_tokenizer(tmp_path / "base")
    make_adapter(tmp_path / "base", tmp_path / "lora", 3, r=4, lora_alpha=8,
                 target_modules=targets)
    runtime = build_lora_runtime(tmp_path / "base", {"tuned": tmp_path / "lora"},
                                 "device.cpu_kernels=torch")
    key = runtime.engine.lora.resolve("tuned")
    core = runtime.core
    core.add_request("r", PROMPT, SamplingParams(max_tokens=1, temperature=0.0,
                                                 prompt_logprobs=VOCAB_SIZE, lora_name=key))
    prompt_logprobs = None
    while core.has_unfinished:
        for output in core.step():
            prompt_logprobs = output.prompt_logprobs or prompt_logprobs
    served = torch.full((len(PROMPT) - 1, VOCAB_SIZE), float("nan"))
    for row, entry in enumerate(prompt_logprobs[1:]):
        for token, logprob in entry.top:
            served[row, token] = logprob
    tuned = torch.log_softmax(merged_logits(tmp_path / "base", tmp_path / "lora", PROMPT), -1)
    base = torch.log_softmax(merged_logits(tmp_path / "base", None, PROMPT), -1)
    torch.testing.assert_close(served, tuned[:-1], atol=2e-4, rtol=1e-4)
    assert not torch.allclose(tuned, base, atol=1e-2)  # the adapter does change the model
