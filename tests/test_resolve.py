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
