"""Adapters that cannot be served fail at load with one clear line; lora.modules forms."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_lora import build_lora_runtime, make_adapter, save_tiny_llama

from toolkit.config.errors import ConfigError
from toolkit.lora.errors import LoraLoadError
from toolkit.lora.modules import parse_modules
from toolkit.lora.peft_format import read_adapter
from toolkit.lora.targets import find_targets


@pytest.fixture(scope="module")
def targets(tiny_base):
    from toolkit.models.loader import load_model

    return find_targets(load_model(tiny_base, torch.float32, "cpu"))


def _read(path, targets, max_rank=16):
    return read_adapter("bad", path, targets, max_rank, torch.float32)


def _copy(adapters, name, tmp_path):
    target = tmp_path / name
    shutil.copytree(adapters[name], target)
    return target


def _edit_config(path, **changes):
    config = json.loads((path / "adapter_config.json").read_text())
    config.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(config))


def _rename_tensors(path, old, new):
    weights_path = path / "adapter_model.safetensors"
    tensors = load_file(str(weights_path))
    save_file({k.replace(old, new): v for k, v in tensors.items()}, str(weights_path))


def test_a_good_adapter_reads(adapters, targets):
    adapter = _read(adapters["patterned"], targets)
    assert adapter.rank == 6 and adapter.target_modules == ("k_proj", "o_proj", "up_proj")
    assert len(adapter.weights) == 6  # three modules in two layers


def test_rank_above_max_lora_rank(adapters, targets):
    with pytest.raises(LoraLoadError, match=r"rank 16 .* above lora.max_lora_rank=8"):
        _read(adapters["mlp_rslora"], targets, max_rank=8)


def test_target_module_the_model_lacks_in_config(adapters, targets, tmp_path):
    path = _copy(adapters, "qv", tmp_path)
    _edit_config(path, target_modules=["q_proj", "fc1"])
    with pytest.raises(LoraLoadError, match=r"target modules \['fc1'\] are not in this "
                                            r"model; valid: \[.*'q_proj'"):
        _read(path, targets)


def test_target_module_the_model_lacks_in_weights(adapters, targets, tmp_path):
    path = _copy(adapters, "qv", tmp_path)
    _edit_config(path, target_modules="q_proj|v_proj")  # a regex: the weights decide
    _rename_tensors(path, "v_proj", "w_proj")
    with pytest.raises(LoraLoadError, match=r"module 'w_proj' .* not in this model"):
        _read(path, targets)


def test_adapter_of_another_base_model(tmp_path, targets):
    other = save_tiny_llama(tmp_path / "wide", hidden_size=96)
    make_adapter(other, tmp_path / "wide-lora", 5, r=4, lora_alpha=8,
                 target_modules=["q_proj"])
    with pytest.raises(LoraLoadError, match=r"lora_A \(4, 96\).*needs \(4, 64\).*another "
                                            r"base model"):
        _read(tmp_path / "wide-lora", targets)


@pytest.mark.parametrize(("change", "message"), [
    ({"use_dora": True}, "DoRA adapters are not supported"),
    ({"peft_type": "IA3"}, "peft_type IA3 is not supported"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"bias": "all"}, "bias='all' is not supported"),
])
def test_unsupported_options(adapters, targets, tmp_path, change, message):
    path = _copy(adapters, "qv", tmp_path)
    _edit_config(path, **change)
    with pytest.raises(LoraLoadError, match=message):
        _read(path, targets)


def test_missing_and_corrupt_files(adapters, targets, tmp_path):
    with pytest.raises(LoraLoadError, match="no adapter_config.json"):
        _read(tmp_path / "nowhere", targets)
    path = _copy(adapters, "qv", tmp_path)
    (path / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LoraLoadError, match="not a readable safetensors file"):
        _read(path, targets)
    (path / "adapter_config.json").write_text("{broken")
    with pytest.raises(LoraLoadError, match="not valid JSON"):
        _read(path, targets)


def test_a_lone_lora_a_weight(adapters, targets, tmp_path):
    path = _copy(adapters, "qv", tmp_path)
    weights_path = path / "adapter_model.safetensors"
    tensors = load_file(str(weights_path))
    save_file({k: v for k, v in tensors.items() if "layers.1.self_attn.q_proj.lora_B" not in k},
              str(weights_path))
    with pytest.raises(LoraLoadError, match=r"layers\.1\.self_attn\.q_proj has no lora_B"):
        _read(path, targets)


def test_a_bad_adapter_stops_the_runtime_at_start(tiny_base, adapters):
    with pytest.raises(ConfigError, match="^lora: LoRA adapter 'big': rank 8 .* above "
                                          "lora.max_lora_rank=4$"):
        build_lora_runtime(tiny_base, {"big": adapters["all7"]}, "lora.max_lora_rank=4")
    with pytest.raises(ConfigError, match="lora.dtype='int8': expected one of"):
        build_lora_runtime(tiny_base, {}, "lora.dtype=int8")
    with pytest.raises(ConfigError, match="is not a directory"):
        build_lora_runtime(tiny_base, {"gone": tiny_base / "nowhere"})


@pytest.mark.parametrize(("value", "expected"), [
    (None, {}),
    ({"sql": "/a/sql"}, {"sql": "/a/sql"}),
    (["sql=/a/sql", " chat = /a/chat "], {"sql": "/a/sql", "chat": "/a/chat"}),
])
def test_modules_forms(value, expected):
    assert parse_modules(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    (["sql"], "expected name=path"),
    (["a=/x", "a=/y"], "named twice"),
    ({"bad name": "/x"}, "without spaces"),
    ("sql=/x", "expected a mapping"),
])
def test_bad_modules(value, message):
    with pytest.raises(LoraLoadError, match=message):
        parse_modules(value)
