"""model.path=file.gguf: a GGUF file served as it is (toolkit/models/gguf_model.py).

Files are written with gguf's own writer from a tiny random Llama (tests/models/gguf_files.py):
the loaded weights equal gguf's dequantization of each tensor type, Q4_1 projections load
as the q4_1 method's blocks without requantizing, a Q8_0 file generates through the real
engine what its dequantized twin (the same weights as safetensors) generates, and the
tokenizer, chat template and generation defaults come from the metadata."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
import transformers
from gguf import GGUFWriter
from gguf.quants import dequantize, quantize
from gguf_files import CHATML, EOS_ID, Q, tiny_llama, write_gguf

from toolkit.models.gguf_model import GGUFError, gguf_model_dir, single_gguf_in
from toolkit.models.loader import load_model, read_model_info
from toolkit.models.source import ModelSourceError, resolve_model_dir
from toolkit.protocol import SamplingParams
from toolkit.quant.q4_1 import unpack_gguf_q4_1

Q4_K_M = {**{f"model.layers.{i}.{name}.weight": Q.Q4_K for i in (0, 1) for name in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.gate_proj",
    "mlp.up_proj")}, "model.layers.0.self_attn.v_proj.weight": Q.Q6_K,
    "model.layers.0.mlp.down_proj.weight": Q.Q6_K, "model.layers.1.self_attn.v_proj.weight":
    Q.Q4_K, "model.layers.1.mlp.down_proj.weight": Q.Q4_K, "model.embed_tokens.weight": Q.Q4_K,
    "lm_head.weight": Q.Q6_K}
"""llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for the output and half the layers' v/down."""

QUANT_TYPES = {
    "F32": Q.F32, "F16": Q.F16, "BF16": Q.BF16, "Q4_0": Q.Q4_0, "Q4_1": Q.Q4_1,
    "Q5_0": Q.Q5_0, "Q5_1": Q.Q5_1, "Q8_0": Q.Q8_0, "Q5_K": Q.Q5_K, "Q6_K": Q.Q6_K,
    "Q4_K_M": Q4_K_M,
}


@pytest.fixture(scope="module")
def llama() -> transformers.LlamaForCausalLM:
    return tiny_llama()


@pytest.fixture()
def cache(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "cache"


def loaded_weights(model) -> dict[str, torch.Tensor]:
    """HF name -> the loaded weight (fused projections cut back into their parts)."""
    weights = {"model.embed_tokens.weight": model.embed_tokens, "model.norm.weight": model.norm,
               "lm_head.weight": model.lm_head}
    for i, layer in enumerate(model.layers):
        prefix = f"model.layers.{i}."
        weights[prefix + "input_layernorm.weight"] = layer.input_layernorm
        weights[prefix + "post_attention_layernorm.weight"] = layer.post_attention_layernorm
        for fused, names in (("qkv_proj", ("self_attn.q_proj", "self_attn.k_proj",
                                           "self_attn.v_proj")),
                             ("o_proj", ("self_attn.o_proj",)),
                             ("gate_up_proj", ("mlp.gate_proj", "mlp.up_proj")),
                             ("down_proj", ("mlp.down_proj",))):
            proj = getattr(layer, fused)
            parts = proj.weight.split(proj.output_sizes)
            for name, part in zip(names, parts):
                weights[f"{prefix}{name}.weight"] = part
    return {name: weight.detach() for name, weight in weights.items()}


@pytest.mark.parametrize("quant_type", list(QUANT_TYPES))
def test_loaded_weights_equal_gguf_dequantization(llama, tmp_path, cache, quant_type):
    held = write_gguf(llama, tmp_path / f"tiny-{quant_type}.gguf", QUANT_TYPES[quant_type])
    model_dir = gguf_model_dir(tmp_path / f"tiny-{quant_type}.gguf", cache)
    model = load_model(model_dir, torch.float32, "cpu", prepack_weights=False)
    packed = quant_type == "Q4_1"
    assert model.quant_method.name == ("q4_1" if packed else "none")
    loaded = loaded_weights(model)
    assert loaded.keys() == held.keys()
    for name, expected in held.items():
        if packed and "_proj." in name:  # (q - 8) * d + (m + 8 d): the int4 kernel's form
            torch.testing.assert_close(loaded[name], expected, rtol=0, atol=1e-6)
        else:
            assert torch.equal(loaded[name], expected), name


def test_q4_1_blocks_load_without_requantizing():
    """llama.cpp's blocks map one to one onto the q4_1 method's codes, d and m."""
    weight = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    blocks = quantize(weight, Q.Q4_1)
    codes, scale, minimum = unpack_gguf_q4_1(torch.from_numpy(blocks))
    assert codes.shape == (64, 128) and int(codes.min()) >= 0 and int(codes.max()) <= 15
    groups = codes.view(64, 4, 32).float() * scale[..., None] + minimum[..., None]
    assert torch.equal(groups.view(64, 128), torch.from_numpy(dequantize(blocks, Q.Q4_1)))


def test_q4_1_file_keeps_the_file_codes_in_bfloat16(llama, tmp_path, cache):
    """Served packed (bfloat16, the int4 route where the CPU has it): each projection's
    dense copy is the file's codes with d and m as bfloat16 holds them."""
    write_gguf(llama, tmp_path / "tiny.gguf", Q.Q4_1)
    model = load_model(gguf_model_dir(tmp_path / "tiny.gguf", cache), torch.bfloat16, "cpu")
    from gguf import GGUFReader

    reader = GGUFReader(str(tmp_path / "tiny.gguf"))
    blocks = torch.from_numpy(np.array(next(
        t.data for t in reader.tensors if t.name == "blk.1.attn_v.weight")))
    codes, scale, minimum = unpack_gguf_q4_1(blocks)
    zero = (minimum + 8 * scale).bfloat16().float()
    expected = ((codes.view(128, 8, 32).float() - 8) * scale.bfloat16().float()[..., None]
                + zero[..., None]).view(128, 256).bfloat16()
    v_proj = model.layers[1].qkv_proj.weight.split((256, 128, 128))[2]
    assert torch.equal(v_proj, expected)
    assert not hasattr(model.layers[1].qkv_proj, "q4_1_blocks")


def test_quant_none_dequantizes_a_q4_1_file(llama, tmp_path, cache):
    held = write_gguf(llama, tmp_path / "tiny.gguf", Q.Q4_1)
    from toolkit.config.schema import QuantConfig

    model = load_model(gguf_model_dir(tmp_path / "tiny.gguf", cache), torch.float32, "cpu",
                       prepack_weights=False, quant=QuantConfig(method="none"))
    assert model.quant_method.name == "none"
    loaded = loaded_weights(model)
    assert all(torch.equal(loaded[name], held[name]) for name in held)


def test_qwen2_file_with_biases_and_unpermuted_rows(tmp_path, cache):
    """llama.cpp writes qwen2's q/k rows as they are (NEOX RoPE) and keeps the biases."""
    torch.manual_seed(1)
    config = transformers.Qwen2Config(
        vocab_size=261, hidden_size=256, intermediate_size=512, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=EOS_ID)
    qwen = transformers.Qwen2ForCausalLM(config).eval()
    held = write_gguf(qwen, tmp_path / "qwen.gguf", Q.Q8_0, arch="qwen2")
    model_dir = gguf_model_dir(tmp_path / "qwen.gguf", cache)
    assert read_model_info(model_dir).architecture == "Qwen2ForCausalLM"
    model = load_model(model_dir, torch.float32, "cpu", prepack_weights=False)
    layer = model.layers[0]
    assert torch.equal(layer.qkv_proj.weight[:256], held["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(layer.qkv_proj.bias[256:384], held["model.layers.0.self_attn.k_proj.bias"])
    assert torch.equal(model.lm_head, held["model.embed_tokens.weight"])


def _run_greedy(runtime, prompts: list[list[int]], max_tokens: int = 12) -> list[list[int]]:
    core = runtime.core
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    tokens = {str(i): [] for i in range(len(prompts))}
    for request_id, prompt in zip(tokens, prompts):
        core.add_request(request_id, prompt, params)
    while core.has_unfinished:
        for output in core.step():
            tokens[output.request_id] += output.new_token_ids
    return list(tokens.values())


def _runtime(model_path: pathlib.Path):
    from toolkit.compose import compose_config
    from toolkit.runtime import build_runtime

    return build_runtime(compose_config([
        "device=cpu", "device.cpu_kernels=torch", f"model.path={model_path}",
        "model.dtype=float32", "model.max_model_len=64", "cache.num_pages=64",
        "cache.page_size=4"]))


def test_q8_0_file_generates_what_its_dequantized_twin_generates(llama, tmp_path, cache,
                                                                 monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(cache))
    held = write_gguf(llama, tmp_path / "tiny-q8_0.gguf", Q.Q8_0)
    twin = tiny_llama()
    twin.load_state_dict(held)
    twin.save_pretrained(tmp_path / "twin")
    gguf_dir = resolve_model_dir("unused", str(tmp_path / "tiny-q8_0.gguf"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "twin" / name).write_bytes((gguf_dir / name).read_bytes())

    prompts = [[1, 40, 41, 42], [7, 8, 9, 10, 11, 12, 13], [100, 3]]
    from_gguf = _run_greedy(_runtime(tmp_path / "tiny-q8_0.gguf"), prompts)
    from_twin = _run_greedy(_runtime(tmp_path / "twin"), prompts)
    assert from_gguf == from_twin
    with torch.no_grad():  # the reference agrees on the first token (peaked logits)
        first = [int(twin(torch.tensor([p])).logits[0, -1].argmax()) for p in prompts]
    assert [tokens[0] for tokens in from_gguf] == first


def test_tokenizer_template_and_defaults_come_from_the_metadata(llama, tmp_path, cache,
                                                                monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(cache))
    write_gguf(llama, tmp_path / "tiny.gguf", Q.Q8_0)
    runtime = _runtime(tmp_path / "tiny.gguf")
    tokenizer = runtime.tokenizer
    assert tokenizer.chat_template == CHATML
    text = tokenizer.render_chat([{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.encode("<|im_start|>the", add_special_tokens=False)
    assert ids[0] == 1 and tokenizer.decode(ids, skip_special_tokens=False) == "<|im_start|>the"
    assert runtime.resolved.eos_token_ids == (EOS_ID,)
    generation = json.loads((runtime.model_dir / "generation_config.json").read_text())
    assert generation["temperature"] == 0.6  # general.sampling.temp


def test_a_directory_holding_one_gguf_file(llama, tmp_path, cache, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(cache))
    (tmp_path / "one").mkdir()
    write_gguf(llama, tmp_path / "one" / "tiny.gguf", Q.F16)
    model_dir = resolve_model_dir("unused", str(tmp_path / "one"))
    assert (model_dir / "model.gguf").resolve() == (tmp_path / "one" / "tiny.gguf").resolve()
    assert resolve_model_dir("unused", str(tmp_path / "one" / "tiny.gguf")) == model_dir
    assert resolve_model_dir(str(tmp_path / "one" / "tiny.gguf")) == model_dir  # as a source
    (tmp_path / "one" / "other.gguf").write_bytes(b"")
    with pytest.raises(ModelSourceError, match="holds 2 GGUF files"):
        resolve_model_dir("unused", str(tmp_path / "one"))
    assert single_gguf_in(model_dir) is None  # a model directory is not searched


def test_a_changed_file_gets_a_new_model_directory(llama, tmp_path, cache):
    write_gguf(llama, tmp_path / "tiny.gguf", Q.Q8_0)
    first = gguf_model_dir(tmp_path / "tiny.gguf", cache)
    assert gguf_model_dir(tmp_path / "tiny.gguf", cache) == first
    write_gguf(llama, tmp_path / "tiny.gguf", Q.F16)
    assert gguf_model_dir(tmp_path / "tiny.gguf", cache) != first


def _one_line_error(path: pathlib.Path, cache: pathlib.Path) -> str:
    with pytest.raises(GGUFError) as caught:
        gguf_model_dir(path, cache)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_corrupt_and_unsupported_files_fail_in_one_line(llama, tmp_path, cache):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 10)
    assert "not a readable GGUF file" in _one_line_error(garbage, cache)

    write_gguf(llama, tmp_path / "whole.gguf", Q.Q8_0)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes((tmp_path / "whole.gguf").read_bytes()[:-4096])
    assert "not a readable GGUF file" in _one_line_error(truncated, cache)

    assert "no such GGUF file" in _one_line_error(tmp_path / "absent.gguf", cache)

    other = tmp_path / "gpt2.gguf"
    writer = GGUFWriter(str(other), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    message = _one_line_error(other, cache)
    assert "architecture 'gpt2' is not supported; supported: llama, qwen2" in message


def test_unsupported_quant_type_names_the_tensor(llama, tmp_path, cache, monkeypatch):
    """A type gguf cannot dequantize (Q8_K here, llama.cpp's internal dot-product type)."""
    write_gguf(llama, tmp_path / "tiny.gguf", {"model.layers.1.mlp.up_proj.weight": Q.Q8_K})
    message = _one_line_error(tmp_path / "tiny.gguf", cache)
    assert message.endswith("tiny.gguf: GGUF tensor 'blk.1.ffn_up.weight' has quant type Q8_K, "
                            "which cannot be dequantized (gguf has no dequantizer for it)")


def test_serve_names_a_bad_gguf_in_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from toolkit.cli.main import app

    monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 12)
    result = CliRunner().invoke(app, ["serve", "server.port=0", f"model.path={bad}"])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: model.path {bad}: not a readable GGUF file")


def test_the_converted_route_holds_the_same_weights(llama, tmp_path):
    """gguf_convert (the pkg: route) shares the reader: its safetensors are the weights a
    GGUF file loads as, and its directory the same config and tokenizer."""
    from safetensors.torch import load_file

    from toolkit.models.gguf_convert import convert_gguf

    held = write_gguf(llama, tmp_path / "tiny.gguf", Q4_K_M)
    out = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "converted")
    tensors = load_file(str(out / "model.safetensors"))
    assert tensors.keys() == held.keys()
    assert all(torch.equal(tensors[name], held[name]) for name in held)
    direct = gguf_model_dir(tmp_path / "tiny.gguf", tmp_path / "cache")
    assert read_model_info(out) == read_model_info(direct)
    assert (out / "tokenizer.json").read_text() == (direct / "tokenizer.json").read_text()
