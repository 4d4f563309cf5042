"""gelu_and_mul (Gemma's GeGLU) against transformers' gelu_pytorch_tanh activation."""

from __future__ import annotations

import pytest
import torch
from transformers.activations import ACT2FN

from toolkit.layers.activation import gelu_and_mul


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gelu_and_mul_is_transformers_gelu_tanh_of_the_gate_times_up(dtype):
    torch.manual_seed(0)
    gate_up = (torch.randn(7, 2 * 48) * 3).to(dtype)  # [T, 2 * I]: gate, then up
    gate, up = gate_up[:, :48], gate_up[:, 48:]
    expected = ACT2FN["gelu_pytorch_tanh"](gate) * up
    out = gelu_and_mul(gate_up)
    assert out.shape == (7, 48) and out.dtype == dtype
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    exact_gelu = torch.nn.functional.gelu(gate.float()) * up.float()
    assert not torch.equal(out.float(), exact_gelu)  # the tanh approximation, not erf
