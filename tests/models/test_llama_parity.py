"""Our Llama-family model through paged KV vs transformers, on tiny random checkpoints."""

from __future__ import annotations

import pathlib

import pytest
import torch
import transformers
from paged_batch import build_forward_batch

from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.kv.cache_pool import KVCachePool
from toolkit.models.loader import load_model, read_model_info

PAGE_SIZE = 4
COMMON = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              rms_norm_eps=1e-5)

CONFIGS = {
    "llama3_rope": (transformers.LlamaConfig, dict(
        rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                          high_freq_factor=4.0, original_max_position_embeddings=16))),
    "llama_linear_rope_tied": (transformers.LlamaConfig, dict(
        tie_word_embeddings=True, rope_scaling=dict(type="linear", factor=2.0))),
    "llama_yarn_rope": (transformers.LlamaConfig, dict(
        rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16))),
    "mistral": (transformers.MistralConfig, dict(sliding_window=None, head_dim=16)),
    "qwen2_bias": (transformers.Qwen2Config, dict(rope_theta=1000000.0)),
}


def _save_random_model(config_cls: type, overrides: dict, directory: pathlib.Path):
    torch.manual_seed(0)
    config = config_cls(**COMMON, **overrides)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # random init leaves norms at 1 and biases at 0: perturb them
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(directory)
    return model


@pytest.fixture(params=["native", "torch"])
def kernels(request) -> KernelRoute:
    """The CPU kernel route the model and its attention backend are built with."""
    return request.getfixturevalue("native_kernels") if request.param == "native" else TORCH


def _paged_runtime(model_dir: pathlib.Path, kernels: KernelRoute):
    model = load_model(model_dir, torch.float32, "cpu", kernels=kernels)
    info = read_model_info(model_dir)
    pool = KVCachePool(info.num_layers, num_pages=32, page_size=PAGE_SIZE,
                       num_kv_heads=info.num_kv_heads, head_dim=info.head_dim,
                       dtype=torch.float32)
    attn = TorchRefBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim,
                           kernels=kernels)
    return model, attn


def _step_logits(model, attn, requests) -> torch.Tensor:
    """requests: (new tokens, start, pages) -> [B, vocab] logits of each request's last token."""
    batch = build_forward_batch(requests, PAGE_SIZE)
    attn.plan(batch)
    with torch.no_grad():
        hidden = model(batch.input_ids, batch.positions, attn)
        return model.compute_logits(hidden[batch.logits_indices])


def _reference_logits(hf_model, tokens: list[int]) -> torch.Tensor:
    """[len(tokens), vocab] float32 logits of the full sequence."""
    with torch.no_grad():
        return hf_model(torch.tensor([tokens])).logits[0].float()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_prefill_then_decode_matches_transformers(name: str, tmp_path: pathlib.Path, kernels):
    hf_model = _save_random_model(*CONFIGS[name], tmp_path)
    model, attn = _paged_runtime(tmp_path, kernels)
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, COMMON["vocab_size"], (13,), generator=generator).tolist()
    pages = [9, 2, 17, 5, 30, 11]
    prompt_len = 7
    ours = [_step_logits(model, attn, [(tokens[:prompt_len], 0, pages)])[0]]
    for position in range(prompt_len, len(tokens)):
        step = [(tokens[position:position + 1], position, pages)]
        ours.append(_step_logits(model, attn, step)[0])
    expected = _reference_logits(hf_model, tokens)[prompt_len - 1:]
    torch.testing.assert_close(torch.stack(ours), expected, atol=1e-4, rtol=1e-4)


def test_two_requests_of_different_lengths_in_one_step(tmp_path: pathlib.Path, kernels):
    hf_model = _save_random_model(*CONFIGS["qwen2_bias"], tmp_path)
    model, attn = _paged_runtime(tmp_path, kernels)
    first = [5, 17, 33, 2, 90, 41, 8, 8, 60]
    second = [71, 3, 12, 55]
    _step_logits(model, attn, [(first[:6], 0, [4, 12, 7])])
    logits = _step_logits(model, attn, [(first[6:], 6, [4, 12, 7]), (second, 0, [20, 1])])
    expected = [_reference_logits(hf_model, seq)[-1] for seq in (first, second)]
    torch.testing.assert_close(logits, torch.stack(expected), atol=1e-4, rtol=1e-4)
    decode = _step_logits(model, attn, [([2], 9, [4, 12, 7]), ([6], 4, [20, 1])])
    expected = [_reference_logits(hf_model, seq)[-1] for seq in (first + [2], second + [6])]
    torch.testing.assert_close(decode, torch.stack(expected), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
def test_prepacked_bf16_weights_give_identical_logits(tmp_path: pathlib.Path):
    """device.prepack_weights changes the matmul weight layout, never the numbers."""
    _save_random_model(*CONFIGS["llama_linear_rope_tied"], tmp_path)
    info = read_model_info(tmp_path)
    logits = {}
    for prepack in (False, True):
        model = load_model(tmp_path, torch.bfloat16, "cpu", prepack_weights=prepack)
        assert (model.packed_lm_head is not None) == prepack
        pool = KVCachePool(info.num_layers, num_pages=32, page_size=PAGE_SIZE,
                           num_kv_heads=info.num_kv_heads, head_dim=info.head_dim,
                           dtype=torch.bfloat16)
        attn = TorchRefBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim)
        prefill = _step_logits(model, attn, [([3, 14, 15, 92, 65], 0, [4, 7]),
                                             ([35, 89, 79], 0, [1])])
        decode = _step_logits(model, attn, [([26], 5, [4, 7]), ([53], 3, [1])])
        logits[prepack] = torch.cat([prefill, decode])
    assert torch.equal(logits[False], logits[True])
