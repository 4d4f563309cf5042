"""QuantLinear: params from a method's specs, fused-shard loading, forward through apply."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from toolkit.kernels.awq_format import dequantize_awq, quantize_groups, to_awq_tensors
from toolkit.quant.awq import AWQMethod
from toolkit.quant.base import ParamSpec, QuantMethod
from toolkit.quant.linear import QuantLinear, ShardLoadError
from toolkit.quant.none import NoQuant

SIZES = (32, 16, 16)  # q, k, v parts of a fused projection
IN_FEATURES = 64


def test_dense_fused_shards_land_in_their_rows_and_forward_is_f_linear():
    layer = QuantLinear(IN_FEATURES, SIZES, True, NoQuant(), torch.float32)
    assert layer.checkpoint_names() == ("weight", "bias")
    parts = [torch.randn(n, IN_FEATURES) for n in SIZES]
    biases = [torch.randn(n) for n in SIZES]
    for shard in (2, 0, 1):  # any order
        layer.load_shard("weight", parts[shard], shard)
        layer.load_shard("bias", biases[shard], shard)
    layer.finish_loading()
    assert torch.equal(layer.weight, torch.cat(parts)) and torch.equal(layer.bias, torch.cat(biases))
    x = torch.randn(5, IN_FEATURES)
    assert torch.equal(layer(x), F.linear(x, torch.cat(parts), torch.cat(biases)))


def test_awq_fused_shards_pack_along_the_output_axis():
    """Each part quantized alone, loaded as a shard, equals the whole fused AWQ tensor."""
    group_size = 32
    weights = [torch.randn(n, IN_FEATURES) for n in SIZES]
    parts = [to_awq_tensors(*quantize_groups(w, group_size)) for w in weights]
    layer = QuantLinear(IN_FEATURES, SIZES, False, AWQMethod(group_size), torch.float32)
    assert layer.qweight.shape == (IN_FEATURES, sum(SIZES) // 8)
    for shard, tensors in enumerate(parts):
        for name, tensor in tensors.items():
            layer.load_shard(name, tensor, shard)
    whole = to_awq_tensors(*quantize_groups(torch.cat(weights), group_size))
    for name, tensor in whole.items():
        assert torch.equal(getattr(layer, name), tensor), name


def test_shard_shape_and_dtype_errors_name_the_mismatch():
    layer = QuantLinear(IN_FEATURES, SIZES, False, AWQMethod(32), torch.float32)
    with pytest.raises(ShardLoadError, match=r"shape \(64, 4\), expected \(64, 2\)"):
        layer.load_shard("qweight", torch.zeros(64, 4, dtype=torch.int32), 1)
    with pytest.raises(ShardLoadError, match="dtype torch.float16, expected torch.int32"):
        layer.load_shard("qweight", torch.zeros(64, 2, dtype=torch.float16), 1)
    with pytest.raises(ShardLoadError, match="no tensor 'weight'"):
        layer.load_shard("weight", torch.zeros(16, 64), 1)


class _SharedIndexMethod(QuantMethod):
    """A method with a tensor shared by every part (like GPTQ's g_idx)."""

    name = "shared"

    def param_specs(self, in_features, out_features, dtype):
        return {"weight": ParamSpec((out_features, in_features), dtype, 0),
                "perm": ParamSpec((in_features,), torch.int32, None)}

    def apply(self, layer, x, bias):
        return F.linear(x[:, layer.perm.long()], layer.weight, bias)


def test_shared_tensors_load_once_and_must_agree_across_parts():
    layer = QuantLinear(4, (2, 2), False, _SharedIndexMethod(), torch.float32)
    perm = torch.tensor([3, 2, 1, 0], dtype=torch.int32)
    layer.load_shard("perm", perm, 0)
    layer.load_shard("perm", perm, 1)
    assert torch.equal(layer.perm, perm)
    with pytest.raises(ShardLoadError, match="differs between the fused parts"):
        layer.load_shard("perm", perm.flip(0), 1)


def test_create_params_undoes_after_load():
    group_size = 32
    tensors = to_awq_tensors(*quantize_groups(torch.randn(64, IN_FEATURES), group_size))
    layer = QuantLinear(IN_FEATURES, (64,), False, AWQMethod(group_size), torch.bfloat16)
    for name, tensor in tensors.items():
        layer.load_shard(name, tensor)
    layer.finish_loading()
    layer.create_params()
    assert layer.checkpoint_names() == ("qweight", "qzeros", "scales")
    assert dict(layer.named_buffers()) == {} and not layer.loaded
    for name, tensor in tensors.items():  # a second load works like the first
        layer.load_shard(name, tensor)
    layer.finish_loading()
    x = torch.randn(3, IN_FEATURES, dtype=torch.bfloat16)
    weight = dequantize_awq(tensors["qweight"], tensors["qzeros"], tensors["scales"],
                            group_size)  # [K, N]
    torch.testing.assert_close(layer(x).float(), x.float() @ weight.float(),
                               atol=0.05, rtol=0.02)
