"""An int8 copy of the LM head for small steps (what a quantization scheme may offer the model).

Per output row (token) one scale, ``scale = amax(|W[v]|) / 127``, and int8 codes
``round(W[v] / scale)``; decode steps multiply them with torch's int8 weight-only CPU
kernel (``aten._weight_int8pack_mm``), half the bytes of the bf16 head. llama.cpp's Q4_1
GGUF of SmolLM2 keeps its (tied) output matrix in 8 bits too (Q8_0). On SmolLM2 with
``quant=q4_1`` the held-out perplexity moved from 16.282 to 16.288 and a one-stream decode
step was ~1.1 ms (6 %) shorter on 2 cores (docs/performance.md).

Only one-row steps use it: the kernel's time grows with the rows (SmolLM2's head, hot in
cache, 2 threads: 1.55 / 2.34 / 4.41 ms at 1 / 4 / 8 rows, against 1.63-1.69 ms for the
oneDNN-packed bf16 head), so batches keep the bf16 head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_CODE = 127
MAX_ROWS = 1
"""Default ``max_rows``."""


@dataclass(frozen=True)
class Int8LMHead:
    """The int8 codes and scales of an LM head, used for steps of at most ``max_rows`` rows."""

    codes: torch.Tensor
    """[V, H] int8."""
    scales: torch.Tensor
    """[V] in the activations' dtype."""
    max_rows: int = MAX_ROWS
    """Hidden-state rows (sampled tokens) up to which the int8 kernel runs; more rows
    (batches, prompt logprobs) take the dense head. bench/perplexity.py raises it to score
    the int8 head on held-out text."""

    @classmethod
    def quantize(cls, weight: torch.Tensor) -> Int8LMHead | None:
        """weight [V, H] -> its int8 copy, or None where the kernel does not apply (it is
        a CPU kernel and is used here for bfloat16 models only)."""
        if weight.device.type != "cpu" or weight.dtype != torch.bfloat16:
            return None
        scales = weight.float().abs().amax(dim=1).clamp_min(1e-12) / MAX_CODE  # [V]
        codes = torch.round(weight.float() / scales[:, None]).clamp_(-MAX_CODE, MAX_CODE)
        return cls(codes.to(torch.int8).contiguous(), scales.to(weight.dtype))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """hidden [N, H] -> logits [N, V] in hidden's dtype, or None for N > max_rows."""
        if hidden.shape[0] > self.max_rows or hidden.dtype != self.scales.dtype:
            return None
        return torch.ops.aten._weight_int8pack_mm(hidden.contiguous(), self.codes, self.scales)
