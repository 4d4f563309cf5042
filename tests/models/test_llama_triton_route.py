"""The model's Triton route (norms, fused add+norm, rotary, SiLU-and-mul kernels) computes
what its torch route does: forced on CPU tensors, the kernels run in Triton's interpreter."""

from __future__ import annotations

import os
import pathlib

import pytest
import torch
import transformers
from paged_batch import build_forward_batch

from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.kernels import dispatch
from toolkit.kv.cache_pool import KVCachePool
from toolkit.models.loader import load_model, read_model_info

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="forcing Triton on CPU tensors needs the interpreter")

PAGE_SIZE = 4
CONFIG = {"vocab_size": 96, "hidden_size": 64, "intermediate_size": 112,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0}
PREFILL = [([3, 14, 15, 92, 65, 35], 0, [4, 7]), ([89, 79, 32], 0, [1])]
DECODE = [([26], 6, [4, 7]), ([53], 3, [1])]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> pathlib.Path:
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny_llama")
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG))
    with torch.no_grad():  # random init leaves the norms at 1: perturb them
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(directory)
    return directory


def _logits(model_dir: pathlib.Path, dtype: torch.dtype) -> torch.Tensor:
    """[4, vocab] logits of a prefill step of two requests, then a decode step."""
    model = load_model(model_dir, dtype, "cpu")
    info = read_model_info(model_dir)
    pool = KVCachePool(info.num_layers, 16, PAGE_SIZE, info.num_kv_heads, info.head_dim, dtype)
    attn = TorchRefBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim)
    logits = []
    with torch.inference_mode():
        for step in (PREFILL, DECODE):
            batch = build_forward_batch(step, PAGE_SIZE)
            attn.plan(batch)
            hidden = model(batch.input_ids, batch.positions, attn)  # [T, hidden]
            logits.append(model.compute_logits(hidden[batch.logits_indices]))
    return torch.cat(logits)


def test_the_default_route_off_cuda_is_torch():
    x = torch.ones(2, 4)
    assert not dispatch.use_triton(x)
    with dispatch.forced_triton():
        assert dispatch.use_triton(x)
    assert not dispatch.use_triton(x)


@pytest.mark.parametrize(("dtype", "tolerance"), [
    (torch.float32, 1e-5),
    # NOTE: the interpreter rounds fp32 -> bf16 toward zero (GPUs round to nearest even)
    (torch.bfloat16, 2e-2),
])
def test_triton_route_matches_torch_route(model_dir: pathlib.Path, dtype: torch.dtype,
                                          tolerance: float):
    want = _logits(model_dir, dtype)
    with dispatch.forced_triton():
        got = _logits(model_dir, dtype)
    torch.testing.assert_close(got, want, atol=tolerance, rtol=tolerance)
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_triton_route_calls_the_kernels(model_dir: pathlib.Path, monkeypatch):
    """Every layer function takes its kernel on the forced route (2 layers: 2 + 2 * 2 - 1
    fused add+norms, 1 plain norm, 2 rotaries, 2 activations)."""
    from toolkit.kernels import silu_and_mul
    from toolkit.layers import rmsnorm, rotary

    calls: dict[str, int] = {}

    def counting(module, name):
        original = getattr(module, name)

        def wrapper(*args):
            calls[name] = calls.get(name, 0) + 1
            return original(*args)

        monkeypatch.setattr(module, name, wrapper)

    counting(rmsnorm, "rmsnorm_triton")
    counting(rmsnorm, "fused_add_rmsnorm_triton")
    counting(rotary, "apply_rotary_triton")
    counting(silu_and_mul, "silu_and_mul_triton")  # layers/activation.py takes it from there
    model = load_model(model_dir, torch.float32, "cpu")
    info = read_model_info(model_dir)
    pool = KVCachePool(info.num_layers, 16, PAGE_SIZE, info.num_kv_heads, info.head_dim,
                       torch.float32)
    attn = TorchRefBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim)
    batch = build_forward_batch(PREFILL, PAGE_SIZE)
    attn.plan(batch)
    with dispatch.forced_triton(), torch.inference_mode():
        model(batch.input_ids, batch.positions, attn)
    assert calls == {"rmsnorm_triton": 1, "fused_add_rmsnorm_triton": 4,
                     "apply_rotary_triton": 2, "silu_and_mul_triton": 2}
