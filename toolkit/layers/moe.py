"""A sparse mixture-of-experts MLP block: a router picks ``top_k`` of E SwiGLU experts per
token, and the token's output is their routing-weighted sum.

Routing (``select_experts``): softmax over the E router logits in float32, the top_k
probabilities, renormalized to sum to one where the model asks (Mixtral always; Qwen3-MoE
with ``norm_topk_prob``). Mixtral's "softmax over the top-k logits" is the same numbers.

Experts (``run_experts``), two routes:

- fused: dense stacked weights (w13 [E, 2I, H], w2 [E, H, I]) on CUDA run the Triton
  fused-MoE kernels (toolkit/kernels/fused_moe.py: a grouped GEMM over token blocks sorted
  by expert);
- grouped (the CPU route, and any expert storage a quant method keeps packed): the
  (token, slot) pairs are sorted by expert and each active expert runs one gate/up matmul,
  SiLU-and-mul and one down matmul over its rows; the outputs are weighted in float32 and
  scatter-added per token. A row's result depends only on its own token: its expert's
  matmul sees the same weights whatever else shares the call (batch-invariant where the
  expert storage's matmul is), and a token's top_k outputs are added in expert order.

The experts object is duck-typed (``Experts``); the quant methods provide it
(toolkit/quant/experts.py), so this floor does not import them.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from toolkit.kernels.dispatch import use_triton
from toolkit.kernels.fused_moe import fused_moe
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.layers.activation import silu_and_mul


class Experts(Protocol):
    """The expert weights of one MoE block, however a quant method stores them."""

    num_experts: int

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Dense (w13 [E, 2I, H], w2 [E, H, I]) in the activations' dtype for the fused
        kernel, or None where the storage has no such copy (packed codes only)."""

    def gate_up(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        """x: [n, H] -> [n, 2I] (gate, then up) through expert ``expert``."""

    def down(self, expert: int, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [n, I] -> [n, H] through expert ``expert``."""


def select_experts(router_logits: torch.Tensor, top_k: int,
                   renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """router_logits [T, E] -> (weights float32 [T, top_k], expert ids int64 [T, top_k]),
    highest probability first."""
    probs = torch.softmax(router_logits.float(), dim=-1)  # [T, E]
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids


def grouped_experts(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                    experts: Experts, *, kernels: KernelRoute = TORCH) -> torch.Tensor:
    """The grouped route: x [T, H], weights/ids [T, k] -> [T, H] in x's dtype."""
    num_tokens, top_k = topk_ids.shape
    flat_ids = topk_ids.flatten()  # [T * k]
    order = torch.argsort(flat_ids, stable=True)  # slots grouped by expert
    counts = torch.bincount(flat_ids, minlength=experts.num_experts).tolist()
    tokens = order // top_k  # [T * k] token of each sorted slot
    rows = x[tokens]  # [T * k, H]
    outputs = []
    start = 0
    for expert, count in enumerate(counts):
        if count:
            gate_up = experts.gate_up(expert, rows[start:start + count])  # [n, 2I]
            outputs.append(experts.down(expert, silu_and_mul(gate_up, kernels=kernels)))
            start += count
    weighted = torch.cat(outputs).float() * topk_weights.flatten()[order, None]  # [T * k, H]
    out = torch.zeros((num_tokens, x.shape[1]), dtype=torch.float32, device=x.device)
    return out.index_add_(0, tokens, weighted).to(x.dtype)


def run_experts(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                experts: Experts, *, kernels: KernelRoute = TORCH) -> torch.Tensor:
    """x [T, H] -> [T, H]: the fused Triton kernels where they apply (CUDA, dense stacked
    weights), the grouped route otherwise."""
    if x.shape[0] == 0:
        return torch.empty_like(x)
    if use_triton(x) and (stacked := experts.stacked()) is not None:
        return fused_moe(x, *stacked, topk_weights, topk_ids)  # the Triton kernels
    return grouped_experts(x, topk_weights, topk_ids, experts, kernels=kernels)


class SparseMoeBlock(nn.Module):
    """Router + experts: x [T, H] -> [T, H].

    ``router``: a module mapping [T, H] to router logits [T, E] (a dense linear layer, the
    checkpoint's ``gate``); ``experts``: the block's Experts (an nn.Module holding their
    weights); ``renormalize``: rescale the top_k weights to sum to one.
    """

    def __init__(self, router: nn.Module, experts: nn.Module, top_k: int, renormalize: bool,
                 *, kernels: KernelRoute = TORCH) -> None:
        super().__init__()
        if not 0 < top_k <= experts.num_experts:
            raise ValueError(f"top_k={top_k} must be in 1 .. {experts.num_experts} experts")
        self.router = router
        self.experts = experts
        self.top_k = top_k
        self.renormalize = renormalize
        self.kernels = kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        router_logits = self.router(x)  # [T, E]
        weights, ids = select_experts(router_logits, self.top_k, self.renormalize)
        return run_experts(x, weights, ids, self.experts, kernels=self.kernels)

