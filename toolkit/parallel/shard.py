"""What one rank builds: its shard of the model (its share of the heads under tensor
parallelism, its stage's layers under pipeline parallelism) and an attention backend over
its own KV pages (those heads of those layers)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from toolkit.attention.base import AttentionBackend, model_attention_layers
from toolkit.attention.registry import attention_over_pool
from toolkit.config.schema import QuantConfig
from toolkit.kernels.route import route_named
from toolkit.layers.pipeline_parallel import PipelineStage
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
    """Ranks of each pipeline stage (that split each of its layers)."""
    num_threads: int | None
    """torch intra-op threads of a rank on the CPU; None leaves torch's default."""
    max_model_len: int
    """The served context (the model sees it as config["max_model_len"])."""
    pipeline_parallel_size: int = 1
    """Stages of consecutive layers; the group has tensor_parallel_size x this ranks."""
    num_micro_batches: int = 1
    """Groups of requests each step is cut into, to follow each other through the stages
    (pipeline_parallel_size of them keeps every stage busy; 1: one batch in flight)."""

    @property
    def world_size(self) -> int:
        """Ranks in the whole group, the driver included."""
        return self.tensor_parallel_size * self.pipeline_parallel_size


@dataclass(frozen=True)
class RankPlace:
    """Where one rank sits: its place in its stage's tensor-parallel group, and its
    pipeline stage (None without pipeline parallelism)."""

    tensor: TensorParallel
    pipeline: PipelineStage | None


def join_stage_groups(spec: ShardSpec, rank: int) -> RankPlace:
    """``rank``'s place, after every rank (the same calls in the same order on each)
    has made the tensor-parallel group of each stage; call after joining the world."""
    tp_size, pp_size = spec.tensor_parallel_size, spec.pipeline_parallel_size
    stage, tp_rank = divmod(rank, tp_size)
    tensor_group = None
    if pp_size > 1 and tp_size > 1:
        for each in range(pp_size):
            group = dist.new_group(list(range(each * tp_size, (each + 1) * tp_size)))
            if each == stage:
                tensor_group = group
    pipeline = None
    if pp_size > 1:
        pipeline = PipelineStage(stage, pp_size, read_model_info(spec.model_dir).num_layers,
                                 tp_size, tp_rank)
    return RankPlace(TensorParallel(tp_rank, tp_size, tensor_group), pipeline)


def local_info(info: ModelInfo, size: int,
               pipeline: PipelineStage | None = None) -> ModelInfo:
    """The model facts of one rank of ``size``: its query and key/value heads (and, in a
    pipeline ``stage``, its stage's layers)."""
    num_layers = info.num_layers
    if pipeline is not None:
        start, end = pipeline.layer_range
        num_layers = end - start
    return replace(info, num_qo_heads=info.num_qo_heads // size,
                   num_kv_heads=max(1, info.num_kv_heads // size), num_layers=num_layers)


def rank_device(spec: ShardSpec, rank: int, own_gpu: bool = False) -> str:
    """The device of ``rank``: cuda:rank for local processes, cuda for a process that sees
    only its own GPU (``own_gpu``, a Ray actor), the CPU otherwise."""
    if spec.device != "cuda" or own_gpu:
        return spec.device
    return f"cuda:{rank}"


def build_shard(spec: ShardSpec, place: RankPlace,
                device: str) -> tuple[torch.nn.Module, AttentionBackend]:
    """This rank's model shard and its attention backend over its own KV pool (the
    pages of its stage's layers only)."""
    parallel = place.tensor
    kernels = route_named(spec.cpu_kernels)
    model = load_model(spec.model_dir, getattr(torch, spec.dtype), device,
                       prepack_weights=spec.prepack_weights, allow_pickle=spec.allow_pickle,
                       quant=spec.quant, batch_invariant=spec.batch_invariant,
                       kernels=kernels, max_model_len=spec.max_model_len, parallel=parallel,
                       pipeline=place.pipeline)
    info = local_info(read_model_info(spec.model_dir), parallel.size, place.pipeline)
    attention = attention_over_pool(info, spec.num_pages, spec.page_size,
                                    getattr(torch, spec.cache_dtype), device,
                                    spec.attention_backend, kernels,
                                    model_attention_layers(model))
    return model, attention
