"""Fixtures of the LoRA tests: the tiny base model and PEFT adapters made on it (see
tests/tiny_lora.py)."""

from __future__ import annotations

import pathlib

import pytest
from tiny_lora import ADAPTERS, make_adapter, save_tiny_llama


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> pathlib.Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def adapters(tiny_base, tmp_path_factory) -> dict[str, pathlib.Path]:
    """name -> directory of each of ADAPTERS."""
    root = tmp_path_factory.mktemp("adapters")
    paths = {}
    for seed, (name, kwargs) in enumerate(ADAPTERS.items(), start=1):
        paths[name] = root / name
        make_adapter(tiny_base, paths[name], seed, **kwargs)
    return paths


@pytest.fixture(scope="session")
def smollm2_dir() -> pathlib.Path:
    """The converted SmolLM2-135M-Instruct directory (a MODEL_FIXTURES name: slow tier)."""
    from toolkit.config.schema import ModelConfig
    from toolkit.models.source import resolve_model_dir

    config = ModelConfig()
    return resolve_model_dir(config.source, config.path)
