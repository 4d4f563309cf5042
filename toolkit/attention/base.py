"""The contract between the model's attention layers and an attention implementation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from toolkit.attention.forward_batch import ForwardBatch
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.kv.cache_pool import KVCachePool


@dataclass(frozen=True)
class LayerAttention:
    """How one layer attends, where layers differ (Gemma 2/3: alternating sliding-window
    and global layers, soft-capped logits, a scale from ``query_pre_attn_scalar``).

    A query at position p attends to the KV positions max(0, p - window_left) .. p; its
    logits are ``scale * q.k``, then ``logits_soft_cap * tanh(logits / logits_soft_cap)``
    when a cap is set. FlashInfer's conventions (its plan's window_left, logits_soft_cap,
    sm_scale), so a GPU backend passes the fields through.
    """

    window_left: int = -1
    """Positions before the query's own that it may see; -1: all (no sliding window). A
    transformers ``sliding_window`` of W (W positions, the query's own included) is
    window_left = W - 1."""
    logits_soft_cap: float = 0.0
    """Cap of the tanh soft-capping of the scaled logits; 0: none."""
    scale: float | None = None
    """Multiplier of q.k; None: the backend's ``scale`` (head_dim ** -0.5 by default)."""

    @property
    def is_plain(self) -> bool:
        """Full causal attention without soft-capping (the scale may still differ)."""
        return self.window_left < 0 and self.logits_soft_cap <= 0


@dataclass(frozen=True)
class NativeDecodeStep:
    """A planned step that native code may attend itself, every layer alike: store each
    token's k and v at ``slots``, then ops.decode_attention over the pages with this plan
    (toolkit/kernels/cpu/ops.cpp; the decoder stack of toolkit/models/native_decoder.py)."""

    caches: list[torch.Tensor]
    """Each layer's pages [num_pages, 2, P, Hkv, D]."""
    slots: torch.Tensor
    """int64 [T], each token's cache slot."""
    kv_indices: torch.Tensor
    """int32, the pages of every request in order."""
    page_starts: torch.Tensor
    """int32 [T], where each query row's request starts in ``kv_indices``."""
    seq_lens: torch.Tensor
    """int32 [T], the positions each query row attends to."""
    scale: float
    """Multiplier of q.k (every layer's)."""


class AttentionBackend(ABC):
    """Paged attention over a KVCachePool, driven by FlashInfer-format page tables.

    Life cycle per step: ``plan(batch)`` once, before the layer loop (host-side work:
    index building, wrapper planning); then ``forward(layer_id, q, k, v)`` once per layer.
    Attention is causal within each request; the queries of request i sit at the last
    ``qo_len_i`` positions of its ``seq_len_i`` KV positions.

    ``kernels``: the CPU kernel route the backend was built with (toolkit.kernels.route;
    build_runtime passes the one it resolved, the default is the torch ops). A backend that
    runs no CPU kernels keeps it only so that a copy of it can be built alike.

    ``layers``: how each layer attends (LayerAttention, one per layer of the pool), for a
    model whose layers differ; a model that has them says so with an ``attention_layers``
    attribute (see ``model_attention_layers``). None: every layer is plain causal
    attention with ``scale``. Whoever builds a copy of a backend passes ``layers`` on.
    """

    def __init__(self, kv_pool: KVCachePool, num_qo_heads: int, num_kv_heads: int,
                 head_dim: int, scale: float | None = None, *,
                 kernels: KernelRoute = TORCH,
                 layers: Sequence[LayerAttention] | None = None) -> None:
        self.kv_pool = kv_pool
        self.kernels = kernels
        self.num_qo_heads = num_qo_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = scale if scale is not None else head_dim**-0.5
        self.layers = _resolve_layers(layers, len(kv_pool.caches), self.scale)
        """One LayerAttention per layer, each with its scale set."""
        self.has_layer_variants = any(
            not layer.is_plain or layer.scale != self.scale for layer in self.layers)
        """Some layer attends other than plainly with ``scale``."""
        self.batch_invariant = False
        """Each query row's output depends only on that row and its request's KV positions
        up to its own: not on the batch, on how many queries its request brought this step,
        nor on which of its pages were cached (set by ``enable_batch_invariance``)."""

    def enable_batch_invariance(self) -> bool:
        """Make ``forward`` batch-invariant (``device.deterministic``); returns whether this
        backend can, on this KV pool. The default cannot (a GPU library's split heuristics
        are its own)."""
        return False

    def native_decode_step(self) -> NativeDecodeStep | None:
        """The planned step as NativeDecodeStep, when every query row of it is a decode
        query of plain attention (same for all layers) that the CPU kernels can run over
        this pool; None otherwise, and by default."""
        return None

    @abstractmethod
    def plan(self, batch: ForwardBatch) -> None:
        """Prepare this step's metadata; called once per forward."""

    @abstractmethod
    def forward(self, layer_id: int, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        """Write k/v into the layer's pages at the batch's slots, then attend.

        q: [T, num_qo_heads, head_dim]; k, v: [T, num_kv_heads, head_dim]
        returns [T, num_qo_heads, head_dim]
        """


def _resolve_layers(layers: Sequence[LayerAttention] | None, num_layers: int,
                    scale: float) -> tuple[LayerAttention, ...]:
    """``layers`` (or plain ones) with every unset scale set to ``scale``."""
    if layers is None:
        return (LayerAttention(scale=scale),) * num_layers
    if len(layers) != num_layers:
        raise ValueError(f"{len(layers)} layer attention specs for a KV pool of "
                         f"{num_layers} layers")
    return tuple(layer if layer.scale is not None else replace(layer, scale=scale)
                 for layer in layers)


def model_attention_layers(model: object) -> tuple[LayerAttention, ...] | None:
    """The model's per-layer attention (its ``attention_layers``), or None when all of its
    layers attend plainly (the Llama family)."""
    return getattr(model, "attention_layers", None)
