"""Start-up resolution: context length, KV page count, device and attention backend."""

from __future__ import annotations

import pytest
import torch

from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError
from toolkit.resolve import (
    resolve_attention,
    resolve_cpu_kernels,
    resolve_device,
    resolve_max_model_len,
    resolve_num_pages,
)


def test_max_model_len_defaults_to_the_checkpoint_and_is_capped_by_it():
    assert resolve_max_model_len(compose_config(["model.max_model_len=null"]), 4096) == 4096
    assert resolve_max_model_len(compose_config(["model.max_model_len=1024"]), 4096) == 1024
    with pytest.raises(ConfigError, match="exceeds the checkpoint's max_position_embeddings=4096"):
        resolve_max_model_len(compose_config(["model.max_model_len=8192"]), 4096)


def test_sliding_window_caps_the_context():
    cfg = compose_config(["model.max_model_len=null"])
    assert resolve_max_model_len(cfg, 32768, sliding_window=4096) == 4096
    with pytest.raises(ConfigError, match="sliding_window=4096"):
        resolve_max_model_len(compose_config(["model.max_model_len=8192"]), 32768, 4096)


def test_num_blocks_from_memory_and_the_one_request_rule():
    cfg = compose_config(["cache.cpu_kv_cache_gb=1", "cache.page_size=16"])
    assert resolve_num_pages(cfg, bytes_per_page=1 << 20, max_model_len=2048) == 1024
    with pytest.raises(ConfigError, match="cache.cpu_kv_cache_gb=1.0 gives 1024 pages"):
        resolve_num_pages(cfg, bytes_per_page=1 << 20, max_model_len=1024 * 16 + 1)
    exact = compose_config(["cache.num_pages=4", "cache.page_size=16"])
    assert resolve_num_pages(exact, bytes_per_page=1, max_model_len=64) == 4
    with pytest.raises(ConfigError, match="cache.num_pages=4 gives 4 pages"):
        resolve_num_pages(exact, bytes_per_page=1, max_model_len=65)


def test_auto_device_and_attention_on_this_cpu():
    cfg = compose_config([])
    assert resolve_device(cfg) == "cpu"
    assert resolve_attention(cfg, "cpu") == "torch_ref"
    assert resolve_attention(compose_config(["attention=torch_ref"]), "cpu") == "torch_ref"


def test_cpu_kernels_native_and_torch_are_routes_handed_out_not_switches():
    torch_route = resolve_cpu_kernels(compose_config(["device.cpu_kernels=torch"]))
    assert torch_route.name == "torch" and torch_route.ops is None
    native_route = resolve_cpu_kernels(compose_config(["device.cpu_kernels=native"]))
    assert native_route.name == "native" and native_route.ops is not None
    assert torch_route.native_ops(torch.zeros(2)) is None  # loading native switches nothing
    assert resolve_cpu_kernels(compose_config(["device.cpu_kernels=auto"])) == native_route


def test_cpu_kernels_that_do_not_build(monkeypatch, caplog):
    """native fails start-up with one line naming the way out; auto falls back to torch."""
    from toolkit.kernels import native

    def failing_build():
        raise native.NativeBuildError("building ops.cpp failed: g++: not found")

    monkeypatch.setattr(native, "load", failing_build)
    with pytest.raises(ConfigError) as info:
        resolve_cpu_kernels(compose_config(["device.cpu_kernels=native"]))
    assert str(info.value) == ("device.cpu_kernels=native: building ops.cpp failed: g++: not "
                               "found; device.cpu_kernels=torch runs without them")
    route = resolve_cpu_kernels(compose_config(["device.cpu_kernels=auto"]))
    assert route.name == "torch" and route.ops is None
    assert "running the torch ops instead" in caplog.text


def _write_config(directory, **fields) -> None:
    import json

    directory.mkdir(parents=True, exist_ok=True)
    base = {"num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4,
            "vocab_size": 96, "max_position_embeddings": 1024}
    (directory / "config.json").write_text(json.dumps({**base, **fields}))


@pytest.mark.parametrize("fields, window, caps", [
    ({"architectures": ["MistralForCausalLM"], "sliding_window": 256}, 256, True),
    ({"architectures": ["Phi3ForCausalLM"], "sliding_window": 511}, 511, True),
    ({"architectures": ["Qwen3ForCausalLM"], "sliding_window": 256,
      "use_sliding_window": False}, None, False),
    ({"architectures": ["Qwen2ForCausalLM"], "sliding_window": 256,
      "use_sliding_window": True, "max_window_layers": 4}, None, False),
    ({"architectures": ["Qwen3ForCausalLM"], "sliding_window": 256, "use_sliding_window": True,
      "layer_types": ["full_attention"] * 3 + ["sliding_attention"]}, 256, True),
    ({"architectures": ["Gemma2ForCausalLM"], "sliding_window": 16}, 16, False),
    ({"architectures": ["Gemma3ForCausalLM"], "sliding_window": 16,
      "layer_types": ["sliding_attention"] * 3 + ["full_attention"]}, 16, False),
])
def test_a_sliding_window_caps_the_context_only_where_the_model_does_not_apply_it(
        tmp_path, fields, window, caps):
    """Mistral v0.1 and Phi-3 slide every layer and Qwen's upper layers slide when turned
    on, while our Llama-family model attends over the full context: capped to the
    window. Gemma 2/3 apply their alternating windows: not capped."""
    from toolkit.models.loader import read_model_info

    _write_config(tmp_path, **fields)
    info = read_model_info(tmp_path)
    assert (info.sliding_window, info.caps_context_to_window) == (window, caps)
    limit = resolve_max_model_len(compose_config([]), info.max_position_embeddings,
                                  info.context_window)
    assert limit == (window if caps else 1024)


@pytest.fixture(scope="module")
def tiny_qwen3_dir(tmp_path_factory):
    """A tiny random Qwen3 checkpoint as transformers writes it (1024 positions)."""
    import transformers

    directory = tmp_path_factory.mktemp("qwen3_limits")
    config = transformers.Qwen3Config(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        max_position_embeddings=1024, bos_token_id=1, eos_token_id=2)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


def test_a_checkpoint_given_by_path_brings_its_own_context(tiny_qwen3_dir):
    """`toolkit serve model.path=DIR` (the default model group, smollm2, around it): the
    context is the checkpoint's max_position_embeddings, not another model's default."""
    from toolkit.cli.preflight import preflight
    from toolkit.models.loader import read_model_info

    cfg = compose_config([f"model.path={tiny_qwen3_dir}", "server.port=0", "device=cpu"])
    assert cfg.model.max_model_len is None
    preflight(cfg)
    info = read_model_info(tiny_qwen3_dir)
    assert resolve_max_model_len(cfg, info.max_position_embeddings,
                                 info.context_window) == 1024


def test_no_model_config_sets_a_context_that_a_path_would_inherit():
    from toolkit.config.store import group_options

    for option in group_options("model"):
        assert compose_config([f"model={option}"]).model.max_model_len is None, option


def test_an_explicit_longer_context_is_a_one_line_error(tiny_qwen3_dir):
    from typer.testing import CliRunner

    from toolkit.cli.main import app

    result = CliRunner().invoke(app, ["serve", "server.port=0", f"model.path={tiny_qwen3_dir}",
                                      "model.max_model_len=2048"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == ("error: model.max_model_len=2048 exceeds the "
                                     "checkpoint's max_position_embeddings=1024")
