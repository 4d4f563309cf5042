"""What one tensor-parallel rank builds: its shard of the model and an attention backend
over its own KV pages (its share of the key/value heads)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from toolkit.attention.base import AttentionBackend, model_attention_layers
from toolkit.attention.registry import attention_over_pool
from toolkit.config.schema import QuantConfig
from toolkit.kernels.route import route_named
from toolkit.layers.tensor_parallel import TensorParallel
from toolkit.models.loader import ModelInfo, load_model, read_model_info


@dataclass(frozen=True)
class ShardSpec:
    """Everything a rank needs to build its shard: the same for every rank (the driver
    resolves it once and hands it to each worker)."""

    model_dir: str
    """The checkpoint directory (every rank reads it: a shared or copied path)."""
    dtype: str
    """Model dtype name (torch attribute)."""
    device: str
    """cpu, or cuda (rank r of local processes takes cuda:r; a Ray actor its own GPU)."""
    quant: QuantConfig
    """The quant config every rank loads its shard with."""
    prepack_weights: bool
    """device.prepack_weights."""
    allow_pickle: bool
    """model.allow_pickle."""
    batch_invariant: bool
    """Ask the quant method for batch-invariant matmuls (device.deterministic on CPU)."""
    cpu_kernels: str | None
    """The resolved CPU kernel route name (native, torch; None off the CPU)."""
    attention_backend: str
    """The resolved attention backend name."""
    num_pages: int
    """KV pages of every rank's pool (the driver's page table indexes them all)."""
    page_size: int
    """Tokens per KV page."""
    cache_dtype: str
    """KV cache dtype name."""
    tensor_parallel_size: int
    """Ranks in the group."""
    num_threads: int | None
    """torch intra-op threads of a rank on the CPU; None leaves torch's default."""
    max_model_len: int
    """The served context (the model sees it as config["max_model_len"])."""


def local_info(info: ModelInfo, size: int) -> ModelInfo:
    """The model facts of one rank of ``size``: its query and key/value heads."""
    return replace(info, num_qo_heads=info.num_qo_heads // size,
                   num_kv_heads=max(1, info.num_kv_heads // size))


def rank_device(spec: ShardSpec, rank: int, own_gpu: bool = False) -> str:
    """The device of ``rank``: cuda:rank for local processes, cuda for a process that sees
    only its own GPU (``own_gpu``, a Ray actor), the CPU otherwise."""
    if spec.device != "cuda" or own_gpu:
        return spec.device
    return f"cuda:{rank}"


def build_shard(spec: ShardSpec, parallel: TensorParallel,
                device: str) -> tuple[torch.nn.Module, AttentionBackend]:
    """This rank's model shard and its attention backend over its own KV pool."""
    kernels = route_named(spec.cpu_kernels)
    model = load_model(spec.model_dir, getattr(torch, spec.dtype), device,
                       prepack_weights=spec.prepack_weights, allow_pickle=spec.allow_pickle,
                       quant=spec.quant, batch_invariant=spec.batch_invariant,
                       kernels=kernels, max_model_len=spec.max_model_len, parallel=parallel)
    info = local_info(read_model_info(spec.model_dir), parallel.size)
    attention = attention_over_pool(info, spec.num_pages, spec.page_size,
                                    getattr(torch, spec.cache_dtype), device,
                                    spec.attention_backend, kernels,
                                    model_attention_layers(model))
    return model, attention
