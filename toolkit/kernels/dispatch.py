"""Which route the model's layers take: the Triton kernels or their torch twins.

The layers (toolkit/layers/) ask ``use_triton(x)`` once per call. The answer is yes for
CUDA tensors when triton imports, and no otherwise, so the CPU path is the plain torch
code. ``forced_triton()`` makes it yes for CPU tensors too, which runs the kernels in
Triton's interpreter (TRITON_INTERPRET=1 set before the kernel modules are imported; see
tests/conftest.py): the way CPU tests check that the Triton route computes what the torch
route does.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Iterator

import torch

_force_triton = False
"""True inside ``forced_triton()``: the Triton route for tensors on any device."""


@functools.cache
def triton_importable() -> bool:
    """Whether a ``triton`` package is installed (checked once, without importing it)."""
    return importlib.util.find_spec("triton") is not None


def use_triton(x: torch.Tensor) -> bool:
    """True when the layer given ``x`` should launch its Triton kernel."""
    return (x.is_cuda or _force_triton) and triton_importable()


@contextlib.contextmanager
def forced_triton(enabled: bool = True) -> Iterator[None]:
    """Within the block, ``use_triton`` ignores the device (tests: the interpreter on CPU)."""
    global _force_triton
    previous, _force_triton = _force_triton, enabled
    try:
        yield
    finally:
        _force_triton = previous
