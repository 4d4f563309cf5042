"""Fused mixture-of-experts MLP: a Triton grouped GEMM over tokens sorted by expert, and its
torch twin (toolkit/layers/moe.py's contract for dense expert weights).

For T tokens, each routed to ``top_k`` of E experts with weights ``topk_weights``:

    out[t] = sum_j topk_weights[t, j] * (silu(x[t] @ Wg[e]^T) * (x[t] @ Wu[e]^T)) @ W2[e]^T,
    e = topk_ids[t, j];   w13 [E, 2I, H] = gate rows then up rows,  w2 [E, H, I]

``fused_moe`` runs the Triton kernels where ``dispatch.use_triton`` says so (CUDA tensors)
and the twin otherwise. The CPU route of a model does not come here: it runs the experts
grouped (toolkit/layers/moe.py), one matmul pair per active expert, with whatever storage a
quant method gave them.

The Triton route, as vLLM's fused_moe: ``align_by_expert`` lays the T * top_k (token, slot)
pairs out sorted by expert, each expert's run padded to a multiple of BLOCK_M, so that one
program's block of rows shares one expert; kernel 1 computes gate and up for such a block
and applies SiLU-and-mul, kernel 2 the down projection times the routing weight; the top_k
rows of a token are then summed. Every shape depends on T only (no host sync), so a decode
step can be captured in a CUDA graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toolkit.kernels.dispatch import use_triton

SMALL_BLOCK_M = 16
"""Rows per program for decode-sized inputs (few tokens per expert)."""
LARGE_BLOCK_M = 64
"""Rows per program for prefill-sized inputs."""
MAX_SMALL_BLOCK_TOKENS = 64
"""Inputs of at most this many tokens use SMALL_BLOCK_M."""


def block_m_for(num_tokens: int) -> int:
    """BLOCK_M of the Triton route for ``num_tokens`` tokens."""
    return SMALL_BLOCK_M if num_tokens <= MAX_SMALL_BLOCK_TOKENS else LARGE_BLOCK_M


def fused_moe_ref(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
                  topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
    """Torch twin, token by token (a reference: one small matmul pair per (token, slot)).

    x [T, H], w13 [E, 2I, H], w2 [E, H, I], topk_weights [T, k] float32, topk_ids [T, k]
    -> [T, H] in x's dtype; each expert output is weighted in float32 and the top_k of a
    token summed in float32.
    """
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for token in range(x.shape[0]):
        for slot in range(topk_ids.shape[1]):
            expert = int(topk_ids[token, slot])
            gate, up = F.linear(x[token:token + 1], w13[expert]).chunk(2, dim=-1)  # [1, I]
            down = F.linear(F.silu(gate) * up, w2[expert])  # [1, H]
            out[token] += down[0].float() * topk_weights[token, slot].float()
    return out.to(x.dtype)


def align_by_expert(topk_ids: torch.Tensor, num_experts: int,
                    block_m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (token, slot) pairs sorted by expert, each expert's run padded to ``block_m``.

    topk_ids [T, k] -> (sorted_slots int32 [P]: flat slot index t * k + j, or T * k for
    padding; block_experts int32 [P / block_m]: the expert of each block; num_padded int32
    [1]: rows in use, a multiple of block_m). P is an upper bound known from the shapes
    (T * k plus at most block_m - 1 padding rows per active expert); blocks past
    num_padded are not used (their expert is clamped to a valid one).
    """
    flat = topk_ids.flatten().long()  # [T * k]
    num_slots = flat.numel()
    counts = torch.zeros(num_experts, dtype=torch.long, device=flat.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))  # [E]
    padded = (counts + block_m - 1) // block_m * block_m
    padded_end = padded.cumsum(0)  # [E]
    order = torch.argsort(flat, stable=True)  # slot indices, grouped by expert
    sorted_expert = flat[order]
    rank = torch.arange(num_slots, device=flat.device) - (counts.cumsum(0) - counts)[sorted_expert]
    destination = (padded_end - padded)[sorted_expert] + rank
    max_padded = num_slots + min(num_experts, num_slots) * (block_m - 1)
    max_padded = -(-max_padded // block_m) * block_m
    sorted_slots = torch.full((max_padded,), num_slots, dtype=torch.int32, device=flat.device)
    sorted_slots[destination] = order.to(torch.int32)
    block_starts = torch.arange(0, max_padded, block_m, device=flat.device)
    block_experts = torch.searchsorted(padded_end, block_starts, right=True)
    block_experts = block_experts.clamp_(max=num_experts - 1).to(torch.int32)
    return sorted_slots, block_experts, padded_end[-1:].to(torch.int32)


def fused_moe_triton(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
                     topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
    """The Triton kernels (imports triton on first call); same contract as the twin."""
    from toolkit.kernels._fused_moe_triton import launch

    block_m = block_m_for(x.shape[0])
    layout = align_by_expert(topk_ids, w13.shape[0], block_m)
    return launch(x, w13, w2, topk_weights, *layout, block_m)


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
              topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
    """Triton on CUDA tensors, the twin elsewhere (see the module doc)."""
    if use_triton(x):
        return fused_moe_triton(x, w13, w2, topk_weights, topk_ids)
    return fused_moe_ref(x, w13, w2, topk_weights, topk_ids)
