"""rms_norm and silu_and_mul against transformers' modules."""

from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from toolkit.layers.activation import silu_and_mul
from toolkit.layers.rmsnorm import rms_norm


def test_rms_norm_matches_transformers_in_bfloat16():
    reference = LlamaRMSNorm(48, eps=1e-5).to(torch.bfloat16)
    with torch.no_grad():
        reference.weight.copy_(torch.randn(48))
    x = torch.randn(7, 48, dtype=torch.bfloat16) * 3
    with torch.no_grad():
        expected = reference(x)
    assert torch.equal(rms_norm(x, reference.weight.detach(), 1e-5), expected)


def test_silu_and_mul_splits_gate_then_up():
    gate, up = torch.randn(3, 5), torch.randn(3, 5)
    expected = torch.nn.functional.silu(gate) * up
    torch.testing.assert_close(silu_and_mul(torch.cat((gate, up), dim=-1)), expected)
