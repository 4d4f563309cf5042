"""Fused MoE: the Triton kernels (interpreter on CPU) vs their torch twin, the expert-sorted
layout they run over, and a compile of both kernels for sm_90 (no GPU needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit.kernels import fused_moe as kernel

triton = pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]


def _problem(num_tokens: int, hidden: int, intermediate: int, num_experts: int, top_k: int,
             dtype: torch.dtype, seed: int = 0):
    """Random x, w13, w2 and a softmax top-k routing (weights float32)."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * scale).to(dtype)

    x = randn(num_tokens, hidden)
    w13 = randn(num_experts, 2 * intermediate, hidden, scale=hidden ** -0.5)
    w2 = randn(num_experts, hidden, intermediate, scale=intermediate ** -0.5)
    logits = torch.randn(num_tokens, num_experts, generator=generator)
    weights, ids = torch.topk(logits.softmax(-1), top_k)
    return x, w13, w2, weights, ids


@pytest.mark.parametrize("num_tokens", [1, 5, 37])
def test_triton_matches_twin_float32(num_tokens: int):
    """37 tokens x top-2 over 4 experts: several 16-row blocks per expert, ragged ends;
    H = 40 and I = 24 are not multiples of the 64-wide tiles."""
    x, w13, w2, weights, ids = _problem(num_tokens, 40, 24, 4, 2, torch.float32)
    torch.testing.assert_close(kernel.fused_moe_triton(x, w13, w2, weights, ids),
                               kernel.fused_moe_ref(x, w13, w2, weights, ids),
                               atol=1e-5, rtol=1e-5)


def test_triton_matches_twin_bfloat16_with_unused_experts():
    """Top-1 over 8 experts for 3 tokens: most experts get no rows."""
    x, w13, w2, weights, ids = _problem(3, 64, 32, 8, 1, torch.bfloat16, seed=1)
    got = kernel.fused_moe_triton(x, w13, w2, weights, ids)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), kernel.fused_moe_ref(x, w13, w2, weights,
                                                                 ids).float(),
                               atol=3e-2, rtol=2e-2)


def test_triton_uses_the_large_block_for_many_tokens(monkeypatch):
    """Above MAX_SMALL_BLOCK_TOKENS the 64-row block is used (lowered here to 4 tokens)."""
    monkeypatch.setattr(kernel, "MAX_SMALL_BLOCK_TOKENS", 4)
    assert kernel.block_m_for(5) == kernel.LARGE_BLOCK_M
    x, w13, w2, weights, ids = _problem(9, 32, 16, 3, 2, torch.float32, seed=2)
    torch.testing.assert_close(kernel.fused_moe_triton(x, w13, w2, weights, ids),
                               kernel.fused_moe_ref(x, w13, w2, weights, ids),
                               atol=1e-5, rtol=1e-5)


def test_twin_is_the_routed_sum_of_expert_mlps():
    x, w13, w2, weights, ids = _problem(2, 8, 4, 3, 2, torch.float32, seed=3)
    expected = torch.zeros(2, 8)
    for token in range(2):
        for slot in range(2):
            expert = ids[token, slot]
            gate, up = (w13[expert] @ x[token]).chunk(2)
            expected[token] += weights[token, slot] * (w2[expert] @ (torch.nn.functional.silu(
                gate) * up))
    torch.testing.assert_close(kernel.fused_moe_ref(x, w13, w2, weights, ids), expected)


def test_align_by_expert_sorts_and_pads_every_slot_once():
    ids = torch.tensor([[0, 2], [2, 3], [0, 2], [2, 0]])  # expert 1 unused
    slots, block_experts, num_padded = kernel.align_by_expert(ids, num_experts=4, block_m=4)
    num_slots = ids.numel()
    used = int(num_padded)
    assert used == 12  # experts 0, 2, 3: 3, 4 and 1 slots, each padded to 4 rows
    assert slots.numel() % 4 == 0 and slots.numel() >= used
    assert sorted(s for s in slots[:used].tolist() if s < num_slots) == list(range(num_slots))
    assert (slots[used:] == num_slots).all()
    flat = ids.flatten()
    for block, expert in enumerate(block_experts[:used // 4].tolist()):
        rows = [s for s in slots[4 * block:4 * block + 4].tolist() if s < num_slots]
        assert rows and all(int(flat[s]) == expert for s in rows)
    assert block_experts[:used // 4].tolist() == [0, 2, 3]


def test_dispatch_runs_the_twin_off_cuda():
    x, w13, w2, weights, ids = _problem(3, 8, 4, 2, 1, torch.float32)
    assert torch.equal(kernel.fused_moe(x, w13, w2, weights, ids),
                       kernel.fused_moe_ref(x, w13, w2, weights, ids))


@pytest.mark.gpu
@pytest.mark.parametrize("num_tokens", [1, 16, 300])
def test_triton_on_cuda_matches_twin_at_model_width(num_tokens: int):
    x, w13, w2, weights, ids = (t.cuda() for t in _problem(num_tokens, 1024, 768, 16, 4,
                                                           torch.bfloat16))
    torch.testing.assert_close(kernel.fused_moe(x, w13, w2, weights, ids).float(),
                               kernel.fused_moe_ref(x, w13, w2, weights, ids).float(),
                               atol=3e-2, rtol=2e-2)


def _compile_for_sm90() -> None:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    from toolkit.kernels import _fused_moe_triton as moe

    index = {"sorted_slots_ptr": "*i32", "block_experts_ptr": "*i32",
             "num_padded_ptr": "*i32"}
    sizes = {name: "i32" for name in ("num_slots", "top_k", "hidden_size",
                                      "intermediate_size", "stride_x", "stride_we",
                                      "stride_wn", "stride_out", "stride_h")}
    for dtype in ("bf16", "fp32"):
        constexprs = {"BLOCK_M": 16, "BLOCK_N": moe.BLOCK_N, "BLOCK_K": moe.BLOCK_K,
                      "DOT_PRECISION": "ieee" if dtype == "fp32" else None,
                      "UPCAST_DOT": False}
        pointers = {"x_ptr": f"*{dtype}", "w13_ptr": f"*{dtype}", "out_ptr": f"*{dtype}"}
        down_pointers = {"h_ptr": f"*{dtype}", "w2_ptr": f"*{dtype}", "weights_ptr": "*fp32",
                         "out_ptr": "*fp32"}
        for fn, signature in ((moe._gate_up_kernel, pointers), (moe._down_kernel,
                                                                down_pointers)):
            names = fn.arg_names
            full = {**index, **sizes, **signature}
            source = ASTSource(fn=fn, signature={n: full.get(n, "constexpr") for n in names},
                               constexprs={(names.index(k),): v for k, v in constexprs.items()})
            compiled = compile(source, target=GPUTarget("cuda", 90, 32),
                               options={"num_warps": 4})
            assert compiled.asm["cubin"], fn


def test_kernels_compile_for_sm90():
    """The interpreter forgives what the compiler refuses; this runs Triton's real pipeline
    to a cubin in a subprocess without TRITON_INTERPRET."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    result = subprocess.run([sys.executable, __file__], check=False, cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "compiled", result.stdout


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _compile_for_sm90()
    print("compiled")
