"""AWQ quantization: beats round-to-nearest where activations have outliers, writes
AutoAWQ's checkpoint layout, and runs end to end from `toolkit quantize`."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
import transformers
from safetensors import safe_open
from typer.testing import CliRunner

from toolkit.cli.main import app
from toolkit.kernels.awq_format import dequantize_awq
from toolkit.quant.awq_search import AwqSettings, awq_layer, fake_quantize
from toolkit.quant.dense_llama import (
    LINEAR_NAMES,
    decoder_layer,
    layer_context,
    rms_norm,
)

GROUP_SIZE = 32
CONFIG = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "max_position_embeddings": 128, "rms_norm_eps": 1e-5}
OUTLIER_CHANNELS = [3, 17, 40, 58]

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP barriers on a busy machine (the
    CLI runs below set device.num_threads=1 too); restored for the modules after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _with_outliers(num_kv_heads: int) -> tuple[dict[str, torch.Tensor], dict]:
    """A random layer whose residual stream has a few channels 30x larger than the rest
    (what LLM activations look like, and where AWQ's scales matter)."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**CONFIG, "num_key_value_heads": num_kv_heads})
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    prefix = "model.layers.0."
    weights = {k[len(prefix):]: v.detach().clone() for k, v in model.state_dict().items()
               if k.startswith(prefix)}
    return weights, config.to_dict()


def _hidden_states(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 32, CONFIG["hidden_size"], generator=generator)
    x[..., OUTLIER_CHANNELS] *= 30
    return x  # [B, L, H]


def _rtn(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    quantized = dict(weights)
    for name in LINEAR_NAMES:
        quantized[f"{name}.weight"] = fake_quantize(weights[f"{name}.weight"], GROUP_SIZE)
    return quantized


@pytest.mark.parametrize("num_kv_heads", [4, 2])
@pytest.mark.parametrize("apply_clip", [True, False])
def test_awq_reconstructs_the_layer_output_better_than_rtn(num_kv_heads: int, apply_clip: bool):
    weights, config = _with_outliers(num_kv_heads)
    ctx = layer_context(config, 32, torch.float32, "cpu")
    calibration = _hidden_states(seed=1)
    _, inputs = decoder_layer(weights, ctx, calibration)
    settings = AwqSettings(group_size=GROUP_SIZE, apply_clip=apply_clip)
    awq = _rtn(awq_layer(weights, ctx, inputs, settings))
    held_out = _hidden_states(seed=2)  # judged on inputs the search did not see
    expected, _ = decoder_layer(weights, ctx, held_out)
    awq_err = (decoder_layer(awq, ctx, held_out)[0] - expected).pow(2).mean()
    rtn_err = (decoder_layer(_rtn(weights), ctx, held_out)[0] - expected).pow(2).mean()
    assert awq_err < 0.7 * rtn_err, (awq_err.item(), rtn_err.item())


def _byte_tokenizer():
    """A byte-level tokenizer with a 256-token vocabulary, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def _tiny_model_dir(directory: pathlib.Path, tie: bool) -> pathlib.Path:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**CONFIG, tie_word_embeddings=tie, eos_token_id=0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(directory)
    _byte_tokenizer().save_pretrained(directory)
    (directory / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    return directory


def _quantize_args(model_dir: pathlib.Path, out_dir: pathlib.Path) -> list[str]:
    return ["quantize", f"model.path={model_dir}", "quant=awq", f"quant.group_size={GROUP_SIZE}",
            "quant.num_calibration_samples=4", "quant.calibration_seq_len=64", "device=cpu",
            "device.num_threads=1",
            f"output={out_dir}"]


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def quantized(request, tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path, object]:
    """(source dir, `toolkit quantize` output dir, the CLI result)."""
    root = tmp_path_factory.mktemp("awq")
    source = _tiny_model_dir(root / "source", tie=request.param)
    result = runner.invoke(app, _quantize_args(source, root / "out"))
    return source, root / "out", result


def _tensors(directory: pathlib.Path) -> dict[str, torch.Tensor]:
    with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118


def test_cli_quantizes_into_the_output_dir(quantized):
    _, out_dir, result = quantized
    assert result.exit_code == 0, result.output
    assert f"wrote {out_dir} (2 layers, 256 calibration tokens" in result.stdout
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja"):
        assert (out_dir / name).is_file(), name


def test_checkpoint_has_autoawq_names_shapes_dtypes_and_config(quantized):
    source, out_dir, _ = quantized
    source_config = json.loads((source / "config.json").read_text())
    config = json.loads((out_dir / "config.json").read_text())
    assert config["quantization_config"] == {
        "quant_method": "awq", "bits": 4, "group_size": GROUP_SIZE, "zero_point": True,
        "version": "gemm", "modules_to_not_convert": None}
    assert config["hidden_size"] == source_config["hidden_size"]
    tensors = _tensors(out_dir)
    hidden, inter = CONFIG["hidden_size"], CONFIG["intermediate_size"]
    kv = hidden // CONFIG["num_attention_heads"] * CONFIG["num_key_value_heads"]
    shapes = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, kv),
              "self_attn.v_proj": (hidden, kv), "self_attn.o_proj": (hidden, hidden),
              "mlp.gate_proj": (hidden, inter), "mlp.up_proj": (hidden, inter),
              "mlp.down_proj": (inter, hidden)}
    expected = {"model.embed_tokens.weight": ((256, hidden), torch.float16),
                "model.norm.weight": ((hidden,), torch.float16)}
    if not source_config["tie_word_embeddings"]:
        expected["lm_head.weight"] = ((256, hidden), torch.float16)
    for layer in range(CONFIG["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            expected[f"{prefix}{norm}.weight"] = ((hidden,), torch.float16)
        for name, (k, n) in shapes.items():
            expected[f"{prefix}{name}.qweight"] = ((k, n // 8), torch.int32)
            expected[f"{prefix}{name}.qzeros"] = ((k // GROUP_SIZE, n // 8), torch.int32)
            expected[f"{prefix}{name}.scales"] = ((k // GROUP_SIZE, n), torch.float16)
    assert {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()} == expected


def _logits(tensors: dict[str, torch.Tensor], config: dict, tokens: torch.Tensor,
            ) -> torch.Tensor:
    """Run a checkpoint (dense, or AWQ dequantized) through the functional layers."""
    ctx = layer_context(config, tokens.shape[1], torch.float32, "cpu")
    x = tensors["model.embed_tokens.weight"].float()[tokens]
    for index in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{index}."
        weights = {}
        for name, t in tensors.items():
            if not name.startswith(prefix):
                continue
            rel = name[len(prefix):]
            if rel.endswith(".qweight"):
                linear = rel.removesuffix(".qweight")
                dense = dequantize_awq(t, tensors[f"{prefix}{linear}.qzeros"],
                                       tensors[f"{prefix}{linear}.scales"].float(), GROUP_SIZE)
                weights[f"{linear}.weight"] = dense.t()  # [K, N] -> nn.Linear's [N, K]
            elif not rel.endswith((".qzeros", ".scales")):
                weights[rel] = t.float()
        x, _ = decoder_layer(weights, ctx, x)
    head = tensors.get("lm_head.weight", tensors["model.embed_tokens.weight"]).float()
    return rms_norm(x, tensors["model.norm.weight"].float(), config["rms_norm_eps"]) @ head.t()


def test_dequantized_checkpoint_computes_the_source_model(quantized):
    """The folded norms and scaled, clipped, packed projections fit together: the AWQ
    checkpoint's logits stay close to the source model's on held-out text."""
    source, out_dir, _ = quantized
    from toolkit.quant.calibration import token_blocks

    config = json.loads((source / "config.json").read_text())
    tokens = token_blocks("evaluation", lambda t: list(t.encode()), 64, max_blocks=2)
    expected = _logits(_tensors(source), config, tokens)
    got = _logits(_tensors(out_dir), config, tokens)
    relative = (got - expected).norm() / expected.norm()
    assert relative < 0.15, relative.item()
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.8


@pytest.mark.parametrize("extra,message", [
    (["quant=none"], "quant.method='none' cannot be written; valid choices: awq"),
    (["quant.group_size=48"], "quant.group_size=48 is not supported; valid choices: 32, 64"),
    (["quant.num_grid_points=0"], "quant.num_grid_points=0 must be >= 1"),
])
def test_bad_settings_fail_with_one_line(tmp_path, extra, message):
    args = _quantize_args(tmp_path / "missing", tmp_path / "out") + extra
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
    assert message in result.stderr


def test_bad_output_dirs_fail_with_one_line(quantized, tmp_path):
    source, out_dir, _ = quantized
    for output, message in [(out_dir, "is not empty"), (source, "is the source model"),
                            (out_dir / "config.json", "is a file")]:
        result = runner.invoke(app, _quantize_args(source, output))
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    missing = runner.invoke(app, _quantize_args(source, tmp_path)[:-1])
    assert missing.exit_code == 2 and "needs output=DIR" in missing.stderr


def test_the_loader_serves_the_checkpoint_as_written(quantized):
    """Our model, loaded from the checkpoint (quant auto-detected) and run with paged
    attention, computes what the dequantized tensors compute."""
    from paged_batch import build_forward_batch

    from toolkit.attention.torch_ref import TorchRefBackend
    from toolkit.kv.cache_pool import KVCachePool
    from toolkit.models.loader import load_model, read_model_info
    from toolkit.quant.calibration import token_blocks

    _, out_dir, _ = quantized
    info = read_model_info(out_dir)
    model = load_model(out_dir, torch.float32, "cpu")
    pool = KVCachePool(info.num_layers, 8, 16, info.num_kv_heads, info.head_dim, torch.float32)
    attn = TorchRefBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim)
    tokens = token_blocks("evaluation", lambda t: list(t.encode()), 64, max_blocks=1)
    batch = build_forward_batch([(tokens[0].tolist(), 0, [5, 2, 7, 0])], 16)
    attn.plan(batch)
    with torch.no_grad():
        served = model.compute_logits(model(batch.input_ids, batch.positions, attn))
    config = json.loads((out_dir / "config.json").read_text())
    expected = _logits(_tensors(out_dir), config, tokens)[0]  # [64, vocab]
    torch.testing.assert_close(served, expected, atol=2e-3, rtol=2e-3)
