"""The CPU kernel route a layer takes, chosen once and handed to it when it is built.

A route is one of two implementations of the CPU hot path (RMSNorm, fused add+RMSNorm,
rotary, SiLU-and-mul, the KV store and decode attention):

    native   the C++ kernels of toolkit/kernels/cpu/ops.cpp; ``ops`` is their module, from
             ``native.load()`` (built on first use, then cached)
    torch    the torch twins; ``ops`` is None

Who decides: ``build_runtime`` (toolkit/runtime.py) once per runtime, through
``toolkit.resolve.resolve_cpu_kernels`` (``device.cpu_kernels``: auto, native or torch),
which returns the route. It is then given, at construction, to every object that runs one
of these ops: ``load_model(kernels=...)`` -> the model -> its norms, rotary embedding and
SiLU-and-mul; ``attention_over_pool`` (toolkit.attention.registry) -> the attention backend; the draft model gets the
same route. Nothing reads a process-wide switch, so two models built with different
routes run side by side in one process (tests, experiments/cpu_kernels_ab.py).

What a route does not decide: the per-call facts. A layer on the native route still asks
``native_ops(*tensors)`` on each call, since the kernels take contiguous CPU tensors of one
dtype in ``native.DTYPES`` only; for any other call (float16, a strided view, a CUDA
tensor) it runs the torch twin. Triton is not a route either: ``dispatch.use_triton``
picks it per tensor (CUDA), before the route is asked.

Layers and backends built directly (tests, experiments, the quantizer) take ``TORCH``
unless given ``native_route()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

import torch

from toolkit.kernels import native

ROUTE_NAMES = ("native", "torch")
"""The routes, named as device.cpu_kernels resolves (ResolvedConfig.cpu_kernels)."""


@dataclass(frozen=True)
class KernelRoute:
    """Which CPU kernels a layer runs: ``name`` and, on the native route, the loaded
    ``ops`` module. Immutable; build one with ``native_route()`` or use ``TORCH``."""

    name: str
    """native or torch."""
    ops: ModuleType | None = field(default=None, repr=False, compare=False)
    """The loaded C++ kernels on the native route; None on the torch route."""

    def __post_init__(self) -> None:
        if self.name not in ROUTE_NAMES:
            raise ValueError(f"kernel route {self.name!r} is not one of {ROUTE_NAMES}")
        if (self.ops is None) != (self.name == "torch"):
            raise ValueError("the native route needs the loaded ops module; torch has none")

    @property
    def is_native(self) -> bool:
        return self.ops is not None

    def native_ops(self, *tensors: torch.Tensor) -> ModuleType | None:
        """The C++ kernels for a call with inputs ``tensors``: the ops module when this is
        the native route and they are contiguous CPU tensors of one dtype the kernels take
        (``native.DTYPES``); None (run the torch twin) otherwise."""
        ops = self.ops
        if ops is None:
            return None
        dtype = tensors[0].dtype
        if dtype not in native.DTYPES:
            return None
        for tensor in tensors:
            if not (tensor.is_cpu and tensor.dtype == dtype and tensor.is_contiguous()):
                return None
        return ops

    def __copy__(self) -> KernelRoute:
        return self

    def __deepcopy__(self, memo: dict) -> KernelRoute:
        """Shared, not copied (a module cannot be): a copied model keeps its route."""
        return self

    def __reduce__(self):
        """Pickled by name; unpickling loads the kernels again (``route_named``)."""
        return route_named, (self.name,)


TORCH = KernelRoute("torch")
"""The torch route: every op is its torch twin. The default of directly built layers."""


def native_route() -> KernelRoute:
    """The native route, with the kernels loaded by ``native.load()`` (built on first use,
    ~30 s, then cached); raises native.NativeBuildError when they do not build."""
    return KernelRoute("native", native.load())


def route_named(name: str | None) -> KernelRoute:
    """The route a resolved name stands for: ``native`` -> ``native_route()`` (the
    already-loaded kernels), ``torch`` or None (not on the CPU) -> ``TORCH``. For code that
    holds the decision as ResolvedConfig.cpu_kernels (a draft model built after the target)."""
    if name is None or name == "torch":
        return TORCH
    if name == "native":
        return native_route()
    raise ValueError(f"kernel route {name!r} is not one of {ROUTE_NAMES}")
