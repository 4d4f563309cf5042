"""Attention backends by name; factories take (kv_pool, num_qo_heads, num_kv_heads,
head_dim, scale=None, *, kernels=TORCH, layers=None), ``kernels`` being the CPU kernel route
(toolkit.kernels.route) chosen by build_runtime and ``layers`` the model's per-layer
attention (base.LayerAttention; None: every layer plain). GPU backends import their
packages only inside the factory."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from toolkit.attention.base import AttentionBackend, LayerAttention
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.kv.cache_pool import KVCachePool
from toolkit.registry import Registry

ATTENTION_BACKENDS = Registry[AttentionBackend]("attention backend")


@ATTENTION_BACKENDS.register("torch_ref")
def _torch_ref(kv_pool: KVCachePool, num_qo_heads: int, num_kv_heads: int, head_dim: int,
               scale: float | None = None, *, kernels: KernelRoute = TORCH,
               layers: Sequence[LayerAttention] | None = None) -> AttentionBackend:
    from toolkit.attention.torch_ref import TorchRefBackend

    return TorchRefBackend(kv_pool, num_qo_heads, num_kv_heads, head_dim, scale,
                           kernels=kernels, layers=layers)


@ATTENTION_BACKENDS.register("flashinfer")
def _flashinfer(kv_pool: KVCachePool, num_qo_heads: int, num_kv_heads: int, head_dim: int,
                scale: float | None = None, *, kernels: KernelRoute = TORCH,
                layers: Sequence[LayerAttention] | None = None) -> AttentionBackend:
    from toolkit.attention.flashinfer import FlashInferBackend

    return FlashInferBackend(kv_pool, num_qo_heads, num_kv_heads, head_dim, scale,
                             kernels=kernels, layers=layers)


def flashinfer_unavailable(device: str) -> str | None:
    """Why attention=flashinfer cannot run on ``device`` (one line), or None when it can.

    Imports flashinfer only when the device is CUDA (the import takes about a second)."""
    if device != "cuda":
        return f"needs a CUDA device (device resolved to {device})"
    try:
        import flashinfer  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
        reason = " ".join(str(exc).split())
        return f"cannot import flashinfer ({type(exc).__name__}: {reason})"
    return None


def attention_over_pool(info, num_pages: int, page_size: int,
                        cache_torch_dtype: torch.dtype, device: str, attention_backend: str,
                        kernels: KernelRoute = TORCH,
                        layers: Sequence[LayerAttention] | None = None) -> AttentionBackend:
    """A KV pool of ``num_pages`` pages for the model ``info`` describes (a ModelInfo, or
    anything with its num_layers, num_qo_heads, num_kv_heads and head_dim: a
    tensor-parallel rank's share of the heads), and the named attention backend over it,
    built with the CPU kernel route ``kernels`` and the model's per-layer attention
    ``layers`` (attention.base.model_attention_layers; None: every layer plain)."""
    kv_pool = KVCachePool(info.num_layers, num_pages, page_size, info.num_kv_heads,
                          info.head_dim, cache_torch_dtype, device)
    return ATTENTION_BACKENDS.get(attention_backend)(
        kv_pool, info.num_qo_heads, info.num_kv_heads, info.head_dim, kernels=kernels,
        layers=layers)
