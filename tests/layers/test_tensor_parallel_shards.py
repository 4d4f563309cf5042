"""Which slice of each weight a tensor-parallel rank keeps (no processes: the sharding
arithmetic; tests/parallel runs the ranks)."""

from __future__ import annotations

import pytest
import torch

from toolkit.layers.tensor_parallel import (
    ShardingError,
    TensorParallel,
    narrow_features,
)
from toolkit.quant.awq import AWQMethod
from toolkit.quant.base import ModelLoadError
from toolkit.quant.gptq import GPTQMethod
from toolkit.quant.none import NoQuant

CONFIG = {"hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
          "intermediate_size": 1536, "vocab_size": 49152}


def test_local_config_keeps_head_dim_and_divides_the_widths():
    local = TensorParallel(1, 3).local_config(CONFIG)
    assert (local["num_attention_heads"], local["num_key_value_heads"]) == (3, 1)
    assert local["intermediate_size"] == 512 and local["head_dim"] == 64
    assert CONFIG["num_attention_heads"] == 9  # the checkpoint's config is not touched


def test_fewer_kv_heads_than_ranks_are_replicated_to_the_ranks_that_read_them():
    # 8 query heads, 2 KV heads, 4 ranks: ranks 0-1 read KV head 0, ranks 2-3 KV head 1
    assert [TensorParallel(r, 4).head_range(2) for r in range(4)] == [(0, 1), (0, 1), (1, 1),
                                                                      (1, 1)]
    assert [TensorParallel(r, 2).head_range(8) for r in range(2)] == [(0, 4), (4, 4)]


def test_vocabulary_shards_are_padded_to_equal_sizes():
    assert [TensorParallel(r, 2).vocab_range(63) for r in range(2)] == [(0, 32), (32, 32)]


@pytest.mark.parametrize("change, message", [
    ({"num_attention_heads": 10}, "does not divide the model's 10 attention heads"),
    ({"num_key_value_heads": 2}, "one must divide the other"),
    ({"intermediate_size": 1000}, "does not divide the MLP width 1000"),
])
def test_indivisible_widths_are_named(change, message):
    with pytest.raises(ShardingError, match=message):
        TensorParallel(0, 3).local_config({**CONFIG, **change})


def test_features_are_cut_on_pack_boundaries_only():
    packed = torch.arange(32).view(4, 8)  # 8 int32 words = 64 4-bit features per row
    assert torch.equal(narrow_features(packed, 1, 8, 16, 32), packed[:, 2:6])
    with pytest.raises(ShardingError, match="does not align to packs of 8"):
        narrow_features(packed, 1, 8, 4, 32)


def test_dense_weight_is_cut_by_rows_or_columns():
    method = NoQuant()
    spec = method.param_specs(8, 6, torch.float32)["weight"]
    weight = torch.arange(48.0).view(6, 8)
    assert torch.equal(method.shard_tensor("weight", spec, weight, (2, 2), None), weight[2:4])
    assert torch.equal(method.shard_tensor("weight", spec, weight, None, (4, 4)), weight[:, 4:])


def test_awq_row_shard_cuts_weights_scales_and_zeros_on_the_same_groups():
    method = AWQMethod(group_size=32)
    specs = method.param_specs(128, 64, torch.float16)
    tensors = {name: torch.arange(torch.Size(spec.shape).numel()).view(spec.shape)
               for name, spec in specs.items()}
    rows = {name: method.shard_tensor(name, specs[name], t, None, (64, 64))
            for name, t in tensors.items()}
    assert torch.equal(rows["qweight"], tensors["qweight"][64:])  # [K, N/8]: input rows
    assert torch.equal(rows["scales"], tensors["scales"][2:])  # [K/32, N]: groups 2 and 3
    assert torch.equal(rows["qzeros"], tensors["qzeros"][2:])


def test_gptq_row_shard_renumbers_groups_and_refuses_act_order():
    method = GPTQMethod(group_size=32, zero_offset=1)
    spec = method.param_specs(128, 64, torch.float16)["g_idx"]
    ordered = torch.arange(128, dtype=torch.int32) // 32
    assert torch.equal(method.shard_tensor("g_idx", spec, ordered, None, (64, 64)),
                       ordered[:64])
    with pytest.raises(ModelLoadError, match="act-order"):
        method.shard_tensor("g_idx", spec, ordered.flip(0), None, (64, 64))
