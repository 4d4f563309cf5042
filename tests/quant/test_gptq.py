"""quant=gptq: the AutoGPTQ layout (pack/unpack), act-order, the layer against a dense
matmul of the dequantized weight, and a tiny GPTQ checkpoint through load_model."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
import torch.nn.functional as F
from paged_batch import prefill_logits
from safetensors.torch import save_file

from toolkit.config.schema import QuantConfig
from toolkit.kernels.awq_format import dequantize_awq, to_awq_tensors
from toolkit.models.loader import ModelLoadError, load_model
from toolkit.quant.gptq import GPTQMethod, create_gptq, group_order
from toolkit.quant.gptq_format import (
    act_order_g_idx,
    dequantize_gptq,
    pack_columns,
    pack_rows,
    to_gptq_tensors,
    unpack_columns,
    unpack_rows,
)
from toolkit.quant.linear import QuantLinear, ShardLoadError
from toolkit.quant.registry import create_quant_method


def _random_gptq(in_features: int, out_features: int, group_size: int, act_order: bool,
                 seed: int, zero_offset: int = 1) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Random GPTQ tensors and, computed independently, their dense W [K, N] float32."""
    generator = torch.Generator().manual_seed(seed)
    num_groups = in_features // group_size
    q = torch.randint(0, 16, (in_features, out_features), generator=generator)
    zeros = torch.randint(zero_offset, 16 + zero_offset, (num_groups, out_features),
                          generator=generator)
    scales = (torch.rand(num_groups, out_features, generator=generator) * 0.02 + 0.001).half()
    order = torch.randperm(in_features, generator=generator) if act_order \
        else torch.arange(in_features)
    g_idx = act_order_g_idx(order, group_size)
    dense = torch.empty(in_features, out_features)
    for k in range(in_features):
        g = int(g_idx[k])
        dense[k] = (q[k] - zeros[g]).float() * scales[g].float()
    return to_gptq_tensors(q, zeros, scales, g_idx, zero_offset), dense


def _gptq_layer(parts: list[dict[str, torch.Tensor]], method: GPTQMethod,
                dtype: torch.dtype) -> QuantLinear:
    in_features = parts[0]["qweight"].shape[0] * 8
    sizes = tuple(p["scales"].shape[1] for p in parts)
    layer = QuantLinear(in_features, sizes, False, method, dtype)
    for shard, tensors in enumerate(parts):
        for name, tensor in tensors.items():
            layer.load_shard(name, tensor, shard)
    layer.finish_loading()
    return layer


def test_pack_rows_and_columns_round_trip_with_the_documented_nibbles():
    values = torch.randint(0, 16, (16, 24), generator=torch.Generator().manual_seed(0))
    rows, cols = pack_rows(values), pack_columns(values)
    assert rows.shape == (2, 24) and cols.shape == (16, 3) and rows.dtype == torch.int32
    assert torch.equal(unpack_rows(rows), values) and torch.equal(unpack_columns(cols), values)
    expected = sum(int(values[8 + j, 5]) << (4 * j) for j in range(8))
    assert int(rows[1, 5]) & 0xFFFFFFFF == expected
    expected = sum(int(values[3, 16 + j]) << (4 * j) for j in range(8))
    assert int(cols[3, 2]) & 0xFFFFFFFF == expected


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("zero_offset", [1, 0])
def test_dequantize_matches_the_element_formula(act_order, zero_offset):
    tensors, dense = _random_gptq(64, 16, 16, act_order, seed=1, zero_offset=zero_offset)
    assert act_order == (not bool((tensors["g_idx"].diff() >= 0).all()))
    weight = dequantize_gptq(tensors["qweight"], tensors["qzeros"], tensors["scales"].float(),
                             tensors["g_idx"], zero_offset)
    assert torch.equal(weight, dense)


@pytest.mark.parametrize("act_order", [False, True])
def test_float32_layer_equals_the_dense_matmul_of_the_dequantized_weight(act_order):
    order = torch.randperm(96, generator=torch.Generator().manual_seed(9))
    g_idx = act_order_g_idx(order if act_order else torch.arange(96), 32)  # shared by parts
    parts = [_regroup(_random_gptq(96, n, 32, False, seed=2 + i)[0], g_idx)
             for i, n in enumerate((32, 16, 16))]
    layer = _gptq_layer([tensors for tensors, _ in parts], GPTQMethod(32, 1), torch.float32)
    assert layer.route == "dequantize"
    dense = torch.cat([d for _, d in parts], dim=1)  # [K, N]
    x = torch.randn(5, 96)
    torch.testing.assert_close(layer(x), x @ dense, atol=1e-5, rtol=1e-5)


def _regroup(tensors: dict[str, torch.Tensor], g_idx: torch.Tensor, zero_offset: int = 1
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The same q/zeros/scales with rows reassigned to groups by ``g_idx``."""
    q = unpack_rows(tensors["qweight"])
    zeros = unpack_columns(tensors["qzeros"]) + zero_offset
    regrouped = to_gptq_tensors(q, zeros, tensors["scales"], g_idx, zero_offset)
    dense = (q - zeros[g_idx.long()]).float() * tensors["scales"].float()[g_idx.long()]
    return regrouped, dense


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("num_tokens", [3, 40])
def test_bf16_layer_on_the_int4_cpu_route(act_order, num_tokens):
    """N = 192 (fused 128 + 64), G = 32: repacked to int4 (act-order rows reordered once,
    x permuted per call), for the int4 kernel (3 rows) and the dequantize route (40)."""
    order = torch.randperm(128, generator=torch.Generator().manual_seed(3))
    g_idx = act_order_g_idx(order if act_order else torch.arange(128), 32)
    parts = [_regroup(_random_gptq(128, n, 32, False, seed=4 + n)[0], g_idx) for n in (128, 64)]
    layer = _gptq_layer([tensors for tensors, _ in parts], GPTQMethod(32, 1), torch.bfloat16)
    assert layer.route == "int4pack" and not hasattr(layer, "qweight")
    assert (layer.input_order is not None) == act_order
    dense = torch.cat([d for _, d in parts], dim=1)  # [K, N] float32
    x = torch.randn(num_tokens, 128).bfloat16()
    expected = F.linear(x, dense.t().bfloat16()).float()
    out = layer(x)
    assert out.dtype == torch.bfloat16 and out.shape == (num_tokens, 192)
    assert ((out.float() - expected).norm() / expected.norm()).item() < 1e-2
    packed_bytes = layer.method.resident_bytes(layer)
    assert packed_bytes < 0.35 * 128 * 192 * 2


def test_act_order_rows_in_group_order_convert_to_the_awq_layout():
    """What the CUDA route feeds the AWQ kernel: rows sorted by g_idx, in AWQ's layout,
    dequantize to the GPTQ weight's rows in that order."""
    order = torch.randperm(128, generator=torch.Generator().manual_seed(11))
    tensors, dense = _regroup(_random_gptq(128, 64, 32, False, seed=12, zero_offset=0)[0],
                              act_order_g_idx(order, 32), zero_offset=0)
    rows, contiguous = group_order(tensors["g_idx"], 32)
    assert contiguous and rows is not None
    q = unpack_rows(tensors["qweight"])[rows]
    zeros = unpack_columns(tensors["qzeros"])  # gptq_v2: stored as is, 0..15
    awq = to_awq_tensors(q.t().contiguous(), zeros.t().contiguous(), tensors["scales"].t())
    weight = dequantize_awq(awq["qweight"], awq["qzeros"], awq["scales"].float(), 32)
    assert torch.equal(weight, dense[rows])


@pytest.mark.gpu
@pytest.mark.parametrize("act_order", [False, True])
def test_cuda_layer_on_the_awq_triton_route(act_order):
    order = torch.randperm(256, generator=torch.Generator().manual_seed(13))
    g_idx = act_order_g_idx(order if act_order else torch.arange(256), 64)
    tensors, dense = _regroup(_random_gptq(256, 128, 64, False, seed=14, zero_offset=0)[0],
                              g_idx, zero_offset=0)
    layer = QuantLinear(256, (128,), False, GPTQMethod(64, 0), torch.float16, "cuda")
    for name, tensor in tensors.items():
        layer.load_shard(name, tensor.cuda())
    layer.finish_loading()
    assert layer.route == "awq_triton"
    x = torch.randn(5, 256, device="cuda").half()
    expected = (x.float() @ dense.cuda()).float()
    out = layer(x).float()
    assert ((out - expected).norm() / expected.norm()).item() < 1e-2


def test_group_size_minus_one_is_one_group_over_all_inputs():
    tensors, dense = _random_gptq(64, 24, 64, True, seed=15)
    method = GPTQMethod(-1, 1)
    assert method.param_specs(64, 24, torch.float32)["scales"].shape == (1, 24)
    layer = _gptq_layer([tensors], method, torch.float32)
    x = torch.randn(3, 64)
    torch.testing.assert_close(layer(x), x @ dense, atol=1e-5, rtol=1e-5)


def test_unequal_act_order_groups_fall_back_to_dequantizing():
    tensors, dense = _random_gptq(64, 64, 32, False, seed=5)
    g_idx = torch.zeros(64, dtype=torch.int32)
    g_idx[::3] = 1  # 22 rows in group 1, 42 in group 0: not contiguous runs of 32
    tensors, dense = _regroup(tensors, g_idx)
    layer = _gptq_layer([tensors], GPTQMethod(32, 1), torch.bfloat16)
    assert layer.route == "dequantize"
    x = torch.randn(4, 64).bfloat16()
    torch.testing.assert_close(layer(x).float(), F.linear(x, dense.t().bfloat16()).float(),
                               atol=2e-2, rtol=2e-2)


def test_fused_parts_with_different_g_idx_are_refused():
    order = torch.randperm(64, generator=torch.Generator().manual_seed(6))
    first, _ = _regroup(_random_gptq(64, 16, 32, False, seed=6)[0], act_order_g_idx(order, 32))
    second, _ = _random_gptq(64, 16, 32, True, seed=7)
    with pytest.raises(ShardLoadError, match="differs between the fused parts"):
        _gptq_layer([first, second], GPTQMethod(32, 1), torch.float32)


HIDDEN, INTERMEDIATE, VOCAB, GROUP = 64, 128, 48, 32
TINY = {"architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": VOCAB, "max_position_embeddings": 32,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": False}
_SHAPES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, 32),
           "self_attn.v_proj": (HIDDEN, 32), "self_attn.o_proj": (HIDDEN, HIDDEN),
           "mlp.gate_proj": (HIDDEN, INTERMEDIATE), "mlp.up_proj": (HIDDEN, INTERMEDIATE),
           "mlp.down_proj": (INTERMEDIATE, HIDDEN)}
"""Projection -> (K, N)."""
_INPUT = {"self_attn.q_proj": "attn", "self_attn.k_proj": "attn", "self_attn.v_proj": "attn",
          "self_attn.o_proj": "o", "mlp.gate_proj": "mlp", "mlp.up_proj": "mlp",
          "mlp.down_proj": "down"}
"""Projections that read the same input share one act-order g_idx."""


def _write_tiny_gptq(directory: pathlib.Path, act_order: bool) -> dict[str, torch.Tensor]:
    """A tiny GPTQ Llama (+ quantization_config); returns the dense weights it holds."""
    generator = torch.Generator().manual_seed(10)
    common = {"model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN, generator=generator),
              "model.norm.weight": torch.ones(HIDDEN),
              "lm_head.weight": torch.randn(VOCAB, HIDDEN, generator=generator) * 0.3}
    quantized, dense = dict(common), dict(common)
    for i in range(2):
        prefix = f"model.layers.{i}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            quantized[f"{prefix}{norm}.weight"] = dense[f"{prefix}{norm}.weight"] = \
                torch.ones(HIDDEN)
        orders = {key: torch.randperm(k, generator=generator) if act_order else torch.arange(k)
                  for key, k in (("attn", HIDDEN), ("o", HIDDEN), ("mlp", HIDDEN),
                                 ("down", INTERMEDIATE))}
        for j, (name, (k, n)) in enumerate(_SHAPES.items()):
            tensors, _ = _random_gptq(k, n, GROUP, False, seed=100 * i + j)
            tensors, weight = _regroup(tensors, act_order_g_idx(orders[_INPUT[name]], GROUP))
            quantized.update({f"{prefix}{name}.{t}": v for t, v in tensors.items()})
            dense[f"{prefix}{name}.weight"] = weight.t().contiguous()  # [N, K]
    config = {**TINY, "quantization_config": {
        "quant_method": "gptq", "bits": 4, "group_size": GROUP, "desc_act": act_order,
        "sym": False, "checkpoint_format": "gptq"}}
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    save_file(quantized, str(directory / "model.safetensors"))
    return dense


def _logits(model, tokens: list[int]) -> torch.Tensor:
    return prefill_logits(model, tokens, 4, 2, 16)


@pytest.mark.parametrize("act_order", [False, True])
def test_tiny_gptq_checkpoint_matches_the_dense_model_of_its_weights(tmp_path, act_order):
    dense_weights = _write_tiny_gptq(tmp_path / "gptq", act_order)
    dense_dir = tmp_path / "dense"
    dense_dir.mkdir()
    (dense_dir / "config.json").write_text(json.dumps(TINY))
    save_file(dense_weights, str(dense_dir / "model.safetensors"))
    tokens = [5, 41, 0, 17, 33, 8, 29, 12, 47, 3]
    for dtype, tolerance in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        gptq = load_model(tmp_path / "gptq", dtype, "cpu")  # quant=auto detects gptq
        dense = load_model(dense_dir, dtype, "cpu")
        assert isinstance(gptq.quant_method, GPTQMethod)
        route = "int4pack" if dtype == torch.bfloat16 else "dequantize"
        assert gptq.layers[0].qkv_proj.route == route
        ours, reference = _logits(gptq, tokens), _logits(dense, tokens)
        assert ((ours - reference).norm() / reference.norm()).item() < tolerance, dtype


def test_checkpoint_errors_name_the_problem(tmp_path):
    config = {"quant_method": "gptq", "bits": 4, "group_size": 32, "checkpoint_format": "gptq"}
    assert isinstance(create_quant_method(QuantConfig(), {"quantization_config": config}),
                      GPTQMethod)
    with pytest.raises(ModelLoadError, match="bits=8 is not supported; supported: 4"):
        create_gptq(QuantConfig(), {**config, "bits": 8}, True)
    with pytest.raises(ModelLoadError, match="checkpoint_format='marlin'.*gptq, gptq_v2"):
        create_gptq(QuantConfig(), {**config, "checkpoint_format": "marlin"}, True)
    with pytest.raises(ModelLoadError, match="quant.group_size=128 but"):
        create_gptq(QuantConfig(method="gptq", group_size=128), config, True)
    with pytest.raises(ModelLoadError, match="no GPTQ quantization_config"):
        create_gptq(QuantConfig(method="gptq"), {}, True)
    _write_tiny_gptq(tmp_path / "g64", act_order=False)
    wrong = json.loads((tmp_path / "g64" / "config.json").read_text())
    wrong["quantization_config"]["group_size"] = 64
    (tmp_path / "g64" / "config.json").write_text(json.dumps(wrong))
    with pytest.raises(ModelLoadError, match="group size 32.*group_size=64"):
        load_model(tmp_path / "g64", torch.float32, "cpu")
