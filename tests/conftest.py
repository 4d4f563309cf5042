"""Shared test set-up: CPU-only defaults, a stable model cache, the real SmolLM2 engine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Before any kernel module is imported: without CUDA, Triton kernels run in the interpreter
# (on a GPU machine they compile; TRITON_INTERPRET=1 forces the interpreter there too).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The SmolLM2 GGUF is converted once into the repository's ignored .cache/ and reused.
os.environ.setdefault("TOOLKIT_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache"))

ENGINE_OVERRIDES = ["device=cpu", "model.max_model_len=2048", "cache.num_pages=512"]


MODEL_FIXTURES = {"runtime", "own_runtime", "engine", "smollm2_dir", "smollm2_gguf_path"}
"""Fixtures that load the real SmolLM2: a test using one (directly or through another
fixture) is marked ``slow``, so ``-m "not slow"`` is the fast tier."""


def pytest_collection_modifyitems(config, items):
    slow = pytest.mark.slow
    skip = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(slow)
        if skip is not None and "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def native_kernels():
    """The native CPU kernel route (what device.cpu_kernels=auto resolves to where g++
    builds): the C++ kernels, built once (~30 s, then cached). Layers, models and attention
    backends built directly take the torch route unless a test hands them this one
    (``kernels=native_kernels``); runtimes resolve their own."""
    from toolkit.kernels.route import native_route

    return native_route()


@pytest.fixture(scope="session")
def runtime():
    """The real SmolLM2 runtime (bfloat16, CPU), built once per test session."""
    from toolkit.compose import compose_config
    from toolkit.runtime import build_runtime

    return build_runtime(compose_config(ENGINE_OVERRIDES))


@pytest.fixture(scope="module")
def own_runtime():
    """A SmolLM2 runtime of the test module's own, for modules that wrap engines around it
    with ``rebuild_engine``: those share the runtime's KV pool, so around the session
    runtime they would overwrite pages the session engine's prefix cache still names."""
    from toolkit.compose import compose_config
    from toolkit.runtime import build_runtime

    return build_runtime(compose_config(ENGINE_OVERRIDES))


@pytest.fixture(scope="session")
def engine(runtime):
    """A started AsyncEngine serving SmolLM2 as model "smollm2"."""
    runtime.engine.start()
    yield runtime.engine
    runtime.engine.shutdown()
