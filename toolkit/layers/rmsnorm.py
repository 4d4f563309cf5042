"""RMSNorm with the numerics of the reference implementations (normalise in float32)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x: [T, H] any float dtype, weight: [H] -> [T, H] in x's dtype.

    Normalises in float32, casts back to x's dtype, then scales by ``weight`` (the order
    transformers' Llama uses, so bf16 results match it bit for bit in spirit).
    """
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)  # [T, H] float32
    return weight * normed.to(x.dtype)
