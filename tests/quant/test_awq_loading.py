"""A tiny random Llama written as an AWQ checkpoint loads through load_model and computes
the logits of the dense model that holds the dequantized weights; mismatches are errors."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from paged_batch import build_forward_batch
from safetensors import safe_open
from safetensors.torch import save_file

from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.config.schema import QuantConfig
from toolkit.kernels.awq_format import dequantize_awq
from toolkit.kv.cache_pool import KVCachePool
from toolkit.models.loader import ModelLoadError, load_model, read_model_info
from toolkit.quant.awq import AWQMethod
from toolkit.quant.rtn import PROJECTION_WEIGHT, write_rtn_awq_checkpoint

PAGE_SIZE = 4
GROUP_SIZE = 32
CONFIG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "vocab_size": 96, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
          "rope_theta": 10000.0, "tie_word_embeddings": False, "eos_token_id": 2}


def _dense_weights() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int, scale: float = 0.1) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    hidden, inter, kv = 64, 128, 32
    weights = {"model.embed_tokens.weight": randn(96, hidden, scale=1.0),
               "model.norm.weight": 1 + randn(hidden), "lm_head.weight": randn(96, hidden)}
    for i in range(2):
        p = f"model.layers.{i}."
        weights |= {p + "input_layernorm.weight": 1 + randn(hidden),
                    p + "post_attention_layernorm.weight": 1 + randn(hidden),
                    p + "self_attn.q_proj.weight": randn(hidden, hidden),
                    p + "self_attn.k_proj.weight": randn(kv, hidden),
                    p + "self_attn.v_proj.weight": randn(kv, hidden),
                    p + "self_attn.o_proj.weight": randn(hidden, hidden),
                    p + "mlp.gate_proj.weight": randn(inter, hidden),
                    p + "mlp.up_proj.weight": randn(inter, hidden),
                    p + "mlp.down_proj.weight": randn(hidden, inter)}
    return weights


def _write_dense(directory: pathlib.Path, weights: dict[str, torch.Tensor],
                 config: dict = CONFIG) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "tokenizer.json").write_text("{}")
    save_file(weights, str(directory / "model.safetensors"))
    return directory


@pytest.fixture
def awq_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    dense = _write_dense(tmp_path / "dense", _dense_weights())
    return write_rtn_awq_checkpoint(dense, tmp_path / "awq", GROUP_SIZE)


def _dequantized_twin(awq_dir: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    """A dense checkpoint whose projections are the AWQ checkpoint's dequantized weights."""
    with safe_open(str(awq_dir / "model.safetensors"), framework="pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    dense = {name: t for name, t in tensors.items() if name.rsplit(".", 1)[-1] not in (
        "qweight", "qzeros", "scales")}
    for name in [n for n in tensors if n.endswith(".qweight")]:
        prefix = name[: -len("qweight")]
        weight = dequantize_awq(tensors[name], tensors[prefix + "qzeros"],
                                tensors[prefix + "scales"], GROUP_SIZE)  # [K, N]
        dense[prefix + "weight"] = weight.float().t().contiguous()
    return _write_dense(out_dir, dense)


def _logits(model_dir: pathlib.Path, dtype: torch.dtype, **kwargs) -> torch.Tensor:
    """Prefill 9 tokens then decode 3, through the paged reference attention."""
    model = load_model(model_dir, dtype, "cpu", **kwargs)
    info = read_model_info(model_dir)
    pool = KVCachePool(info.num_layers, num_pages=16, page_size=PAGE_SIZE,
                       num_kv_heads=info.num_kv_heads, head_dim=info.head_dim, dtype=dtype)
    attn = TorchRefBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim)
    tokens, pages, out = [5, 17, 33, 2, 90, 41, 8, 8, 60, 7, 71, 3], [3, 9, 1, 12], []
    steps = [(tokens[:9], 0)] + [([tokens[i]], i) for i in range(9, 12)]
    for new, start in steps:
        batch = build_forward_batch([(new, start, pages)], PAGE_SIZE)
        attn.plan(batch)
        with torch.no_grad():
            hidden = model(batch.input_ids, batch.positions, attn)
            out.append(model.compute_logits(hidden[batch.logits_indices])[0])
    return torch.stack(out)


def test_rtn_checkpoint_has_the_autoawq_layout(awq_dir: pathlib.Path):
    config = json.loads((awq_dir / "config.json").read_text())
    assert config["quantization_config"] == {
        "quant_method": "awq", "bits": 4, "group_size": GROUP_SIZE, "zero_point": True,
        "version": "gemm", "modules_to_not_convert": None}
    assert (awq_dir / "tokenizer.json").is_file()
    with safe_open(str(awq_dir / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
        qweight = f.get_tensor("model.layers.0.mlp.gate_proj.qweight")
        scales = f.get_tensor("model.layers.0.mlp.down_proj.scales")
    assert not any(PROJECTION_WEIGHT.fullmatch(n) for n in names)
    assert "lm_head.weight" in names and "model.embed_tokens.weight" in names
    assert qweight.dtype == torch.int32 and qweight.shape == (64, 128 // 8)
    assert scales.dtype == torch.float16 and scales.shape == (128 // GROUP_SIZE, 64)


def test_awq_logits_match_the_dequantized_dense_model_float32(awq_dir, tmp_path):
    twin = _dequantized_twin(awq_dir, tmp_path / "twin")
    expected = _logits(twin, torch.float32)
    got = _logits(awq_dir, torch.float32)  # quant=auto detects awq
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"),
                    reason="this torch has no int4 CPU matmul")
def test_awq_logits_match_the_dequantized_dense_model_bf16(awq_dir, tmp_path):
    twin = _dequantized_twin(awq_dir, tmp_path / "twin")
    expected = _logits(twin, torch.float32)
    model = load_model(awq_dir, torch.bfloat16, "cpu", quant=QuantConfig(method="awq"))
    assert model.layers[0].gate_up_proj.int4pack  # the packed int4 CPU route
    got = _logits(awq_dir, torch.bfloat16, quant=QuantConfig(method="awq"))
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_quant_none_on_an_awq_checkpoint_is_refused(awq_dir):
    with pytest.raises(ModelLoadError, match="quant.method='none' but the checkpoint is awq"):
        load_model(awq_dir, torch.float32, "cpu", quant=QuantConfig(method="none"))


def test_quant_awq_on_a_dense_checkpoint_is_refused(tmp_path):
    dense = _write_dense(tmp_path, _dense_weights())
    with pytest.raises(ModelLoadError, match="no AWQ quantization_config"):
        load_model(dense, torch.float32, "cpu", quant=QuantConfig(method="awq"))


def test_declared_group_size_that_disagrees_with_the_tensors_is_refused(awq_dir):
    config = json.loads((awq_dir / "config.json").read_text())
    config["quantization_config"]["group_size"] = 64  # tensors were written with 32
    (awq_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"scales has \d+ groups for \d+ input features "
                                             r"\(group size 32\), but the quantization "
                                             "config says group_size=64"):
        load_model(awq_dir, torch.float32, "cpu")


def test_group_size_that_does_not_divide_a_projection_is_refused():
    """SmolLM2's 576-wide projections have no whole groups of 128."""
    with pytest.raises(ModelLoadError, match="group_size=128 needs in_features divisible by "
                                             "it .* a 576 -> 960 projection"):
        AWQMethod(128).param_specs(576, 960, torch.bfloat16)


def test_rtn_refuses_a_group_size_that_does_not_divide_a_projection(tmp_path):
    dense = _write_dense(tmp_path / "dense", _dense_weights())
    with pytest.raises(ValueError, match=r"_proj.weight \[\d+, 64\]: in_features 64 is not "
                                         "a multiple of group 128"):
        write_rtn_awq_checkpoint(dense, tmp_path / "awq", 128)
