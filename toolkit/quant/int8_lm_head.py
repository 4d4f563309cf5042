"""An int8 copy of the LM head for small steps (what a quantization scheme may offer the model).

Per output row (token) one scale, ``scale = amax(|W[v]|) / 127``, and int8 codes
``round(W[v] / scale)``, half the bytes of the bf16 head; llama.cpp's Q4_1 GGUF of SmolLM2
keeps its (tied) output matrix in 8 bits too (Q8_0). Two kernels multiply them:

    native   toolkit/kernels/q8_linear.py: the activations quantized per block of 32 to
             int8 and integer dot products (VNNI), as llama.cpp multiplies Q8_0 by Q8_0;
             batch-invariant
    torch    aten._weight_int8pack_mm with bf16 activations

SmolLM2's head read from DRAM, as in a decode step (Zen 4, 2 threads, ms at 1 / 4 / 8 / 16 /
64 rows, ``python experiments/lm_head_ab.py --cold``): q8_linear 0.73 / 0.83 / 1.84 / 2.61 /
6.57, _weight_int8pack_mm 2.06 / 3.13 / 6.96 / 12.92 / 46.07, the oneDNN-packed bf16 head
2.11 / 1.78 / 2.37 / 3.20 / 9.55. So on the native route every step takes q8_linear (a row's
logits then do not depend on the step's other rows), and on the torch route one-row steps
take the torch kernel and longer ones (batches, prompt logprobs) the dense head. Held-out
perplexity with ``quant=q4_1`` and ``quant=w8a8`` on SmolLM2: docs/performance.md
(experiments/perplexity.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from toolkit.kernels.q8_linear import BLOCK, LANES, pack_q8
from toolkit.kernels.route import TORCH, KernelRoute

MAX_CODE = 127
MAX_ROWS = 1
"""``max_rows`` on the torch route (where the torch kernel stops beating the bf16 head)."""


@dataclass(frozen=True)
class Int8LMHead:
    """The int8 codes and scales of an LM head, used for steps of at most ``max_rows`` rows."""

    codes: torch.Tensor
    """[V, H] int8 on the torch route; on the native one in q8_linear's layout (uint8
    [V/8, H/32 * 256])."""
    scales: torch.Tensor
    """[V]: in the activations' dtype on the torch route, float32 on the native one."""
    max_rows: int
    """Hidden-state rows (sampled tokens) up to which the int8 kernel runs; more rows
    take the dense head (native route: no limit)."""
    kernels: KernelRoute = TORCH
    """The kernel route (native: q8_linear; torch: _weight_int8pack_mm)."""

    @classmethod
    def quantize(cls, weight: torch.Tensor, kernels: KernelRoute = TORCH) -> Int8LMHead | None:
        """weight [V, H] -> its int8 copy, or None where no kernel applies (they are CPU
        kernels and are used here for bfloat16 models only). The native route needs V a
        multiple of 8 and H of 32, else the head takes the torch kernel."""
        if weight.device.type != "cpu" or weight.dtype != torch.bfloat16:
            return None
        scales = weight.float().abs().amax(dim=1).clamp_min(1e-12) / MAX_CODE  # [V]
        codes = torch.round(weight.float() / scales[:, None]).clamp_(-MAX_CODE, MAX_CODE)
        codes = codes.to(torch.int8)
        vocab_size, hidden_size = weight.shape
        if kernels.is_native and vocab_size % LANES == 0 and hidden_size % BLOCK == 0:
            return cls(pack_q8(codes), scales, sys.maxsize, kernels)
        return cls(codes.contiguous(), scales.to(weight.dtype), MAX_ROWS)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """hidden [N, H] -> logits [N, V] in hidden's dtype, or None for N > max_rows (and,
        on the torch route, for hidden not in the scales' dtype)."""
        if hidden.shape[0] > self.max_rows:
            return None
        if self.kernels.is_native:
            return self.kernels.ops.q8_linear(hidden.contiguous(), self.codes, self.scales)
        if hidden.dtype != self.scales.dtype:
            return None
        return torch.ops.aten._weight_int8pack_mm(hidden.contiguous(), self.codes, self.scales)
