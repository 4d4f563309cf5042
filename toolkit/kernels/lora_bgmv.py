"""Batched LoRA delta, one adapter per row (Punica's BGMV): ``y[t] += B[s_t] @ (A[s_t] @ x[t])``.

Layout (toolkit/lora/layer.py fills it): ``S`` adapter slots, ``Q`` shrink rows per slot
(a fused projection's parts side by side, each padded to the largest rank), ``K`` inputs,
``N`` outputs; the LoRA scaling is already folded into ``b``.
    x [T, K], a [S, Q, K], b [S, N, Q], slots int [T] (-1: no adapter, the row is left
    as it is)  ->  delta [T, N] in x's dtype (zero on rows without an adapter).

``lora_delta`` runs the Triton kernels on CUDA tensors (two launches per projection:
shrink, then expand; each program owns one row, so a row's result does not depend on the
others) and the torch twin elsewhere. The CPU route of the serving path groups rows by
adapter instead (toolkit/lora/layer.py); the twin is the oracle of both.
"""

from __future__ import annotations

import torch

from toolkit.kernels.dispatch import use_triton


def lora_delta_ref(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                   slots: torch.Tensor) -> torch.Tensor:
    """Torch twin: each row's adapter gathered, two batched mat-vecs in float32.
    x [T, K], a [S, Q, K], b [S, N, Q], slots [T] -> [T, N] in x's dtype."""
    has_adapter = slots >= 0  # [T]
    index = slots.clamp(min=0).long()
    shrunk = torch.bmm(a[index].float(), x.float().unsqueeze(2))  # [T, Q, 1]
    delta = torch.bmm(b[index].float(), shrunk).squeeze(2)  # [T, N]
    return (delta * has_adapter.unsqueeze(1)).to(x.dtype)


def lora_delta_triton(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                      slots: torch.Tensor) -> torch.Tensor:
    """The Triton kernels (imports triton on first call); same contract as the twin."""
    from toolkit.kernels._lora_bgmv_triton import launch

    return launch(x, a, b, slots)


def lora_delta(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
               slots: torch.Tensor) -> torch.Tensor:
    """Triton on CUDA tensors, the torch twin otherwise."""
    if use_triton(x):
        return lora_delta_triton(x, a, b, slots)
    return lora_delta_ref(x, a, b, slots)
