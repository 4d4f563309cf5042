"""Tensor parallelism inside a model: which slice of each weight a rank owns, and the two
collectives the sharded layers need (Megatron's layout, as vLLM's parallel layers use it).

Column-parallel projections (q, k, v, gate, up) keep a rank's slice of output features and
need no communication; row-parallel ones (o, down) keep its slice of input features and
sum their partial outputs with one all-reduce. The embedding and the LM head are split
along the vocabulary: an embedding row lives on one rank (all-reduce of the masked
lookups), the logits are gathered. Query heads are split evenly; key/value heads too where
there are at least as many as ranks, otherwise each rank keeps the one its query heads
read (replicated across the ranks that share it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F


class ShardingError(ValueError):
    """A model that cannot be split ``size`` ways (heads or widths not divisible)."""


def check_divisible(config: dict[str, Any], size: int) -> None:
    """Raise ShardingError naming the first of the config's widths that ``size`` ranks
    cannot split: query heads, key/value heads (either way), the MLP width."""
    num_qo_heads = config["num_attention_heads"]
    num_kv_heads = config.get("num_key_value_heads") or num_qo_heads
    if num_qo_heads % size:
        raise ShardingError(f"tensor_parallel_size={size} does not divide the model's "
                            f"{num_qo_heads} attention heads")
    if num_kv_heads % size and size % num_kv_heads:
        raise ShardingError(f"tensor_parallel_size={size} and the model's {num_kv_heads} "
                            "key/value heads: one must divide the other")
    if config["intermediate_size"] % size:
        raise ShardingError(f"tensor_parallel_size={size} does not divide the MLP width "
                            f"{config['intermediate_size']}")


@dataclass(frozen=True)
class TensorParallel:
    """This rank's place in a tensor-parallel group of ``size`` ranks.

    ``group``: the torch.distributed process group of the ranks (None: the default group).
    """

    rank: int
    size: int
    group: Any = None

    def local_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The HF config of this rank's shard: its heads and MLP width (head_dim fixed, so
        that it is not derived again from the narrower head count)."""
        check_divisible(config, self.size)
        local = copy.deepcopy(config)
        num_qo_heads = config["num_attention_heads"]
        num_kv_heads = config.get("num_key_value_heads") or num_qo_heads
        local["head_dim"] = config.get("head_dim") or config["hidden_size"] // num_qo_heads
        local["num_attention_heads"] = num_qo_heads // self.size
        local["num_key_value_heads"] = max(1, num_kv_heads // self.size)
        local["intermediate_size"] = config["intermediate_size"] // self.size
        return local

    def head_range(self, num_heads: int) -> tuple[int, int]:
        """(first head, head count) of ``num_heads`` this rank keeps: an even share, or,
        with fewer heads than ranks, the one head its share of the query heads reads."""
        if num_heads >= self.size:
            per_rank = num_heads // self.size
            return self.rank * per_rank, per_rank
        return self.rank * num_heads // self.size, 1

    def even_range(self, num: int) -> tuple[int, int]:
        """(start, length) of this rank's equal share of ``num`` (which it divides)."""
        return self.rank * (num // self.size), num // self.size

    def vocab_range(self, vocab_size: int) -> tuple[int, int]:
        """(first row, rows) of this rank's padded share of the vocabulary: every rank
        holds ceil(vocab / size) rows; the last one's tail past the vocabulary is zero."""
        per_rank = -(-vocab_size // self.size)
        return self.rank * per_rank, per_rank

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum ``x`` over the ranks, in place."""
        dist.all_reduce(x, group=self.group)
        return x

    def embed(self, input_ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """input_ids [T], this rank's embedding rows [V/size, H] -> embeddings [T, H]."""
        start, rows = self.vocab_range(weight.shape[0] * self.size)
        local_ids = input_ids - start
        outside = (local_ids < 0) | (local_ids >= rows)
        hidden = F.embedding(local_ids.masked_fill(outside, 0), weight)  # [T, H]
        return self.all_reduce(hidden.masked_fill_(outside[:, None], 0))

    def gather_logits(self, logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """logits [N, V/size] of this rank's vocabulary rows -> [N, vocab_size]."""
        parts = [torch.empty_like(logits) for _ in range(self.size)]
        dist.all_gather(parts, logits.contiguous(), group=self.group)
        return torch.cat(parts, dim=-1)[:, :vocab_size]


def narrow_features(tensor: torch.Tensor, dim: int, pack: int, start: int,
                    length: int) -> torch.Tensor:
    """The slice of ``tensor`` along ``dim`` holding features [start, start + length),
    where one element along ``dim`` holds ``pack`` features (8 for int32-packed 4-bit
    weights, the group size for per-group scales)."""
    if start % pack or length % pack:
        raise ShardingError(f"a shard of {length} features at {start} does not align to "
                            f"packs of {pack}")
    return tensor.narrow(dim, start // pack, length // pack)
