"""The CPU kernels of toolkit/kernels/cpu/ops.cpp: built on first use, one call per op.

A batch-1 decode step of a small model on the CPU is bound by per-op overhead, not
arithmetic: the torch route of an RMSNorm is ~10 ops (~40 us for a 576-wide row), of
decode attention a gather per K and V plus SDPA. Each kernel here does one of them in
one call, rounding where its torch twin rounds:

    rms_norm, fused_add_rms_norm   toolkit/layers/rmsnorm.py
    silu_and_mul                   toolkit/kernels/silu_and_mul.py (silu_and_mul_ref)
    rotary                         RotaryEmbedding.apply on the q and k heads
    store_kv, decode_attention     TorchRefBackend's index_copy_ and decode SDPA (with a
                                   layer's sliding window and soft-capped logits: the
                                   masked, tanh-capped attention of its torch route)
    store_kv_fp8                   quantize_kv (toolkit/kv/cache_pool.py) and index_copy_
                                   into an fp8 cache, which decode_attention then reads
                                   in place with its kv_scales
    quantize_rows, dequantize_rows toolkit/kernels/int8_rows.py (quant=w8a8's per-token
                                   int8 activations, and the scaling of its int32 matmul)
    lora_bgmv                      toolkit/kernels/lora_bgmv.py lora_delta_ref (each row's
                                   LoRA delta through its own adapter slot)
    argmax_rows                    torch.argmax over each row of float32 logits (the
                                   sampler's greedy choice, toolkit/kernels/argmax.py)
    q4_1_linear, q8_linear         toolkit/kernels/q4_1_linear.py, q8_linear.py (cpu/q4_1.cpp,
                                   cpu/q8.cpp: 4- and 8-bit weights times int8 activations)
    DecoderStack                   (cpu/decoder_stack.cpp) a Llama decode step's layers
                                   in one call, toolkit/models/native_decoder.py

``load()`` compiles the files with torch.utils.cpp_extension (g++ and ninja; ~30 s once,
then cached under TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions) and returns the
module; it is the one way to get it. Loading turns nothing on: the layers call the kernels
only when they were built with the native route (toolkit/kernels/route.py), which
build_runtime chooses from ``device.cpu_kernels`` (toolkit/config/schema/).
"""

from __future__ import annotations

import hashlib
import logging
import pathlib
import platform
import subprocess
from types import ModuleType

import torch

logger = logging.getLogger(__name__)

SOURCE = pathlib.Path(__file__).parent / "cpu" / "ops.cpp"
"""The module's main file (its bindings); SOURCES are all the files built into it."""
SOURCES = tuple(SOURCE.with_name(name) for name in (
    "ops.cpp", "q4_1.cpp", "q8.cpp", "decoder_stack.cpp"))
HEADERS = (SOURCE.with_name("ops.h"), SOURCE.with_name("int8_blocks.h"))
DTYPES = (torch.float32, torch.bfloat16)
"""Tensor dtypes the kernels take; a call with others runs the torch twin."""


class NativeBuildError(RuntimeError):
    """The C++ kernels could not be compiled or loaded."""


CFLAGS = ["-O3", "-march=native", "-mprefer-vector-width=256", "-fopenmp"]
"""Built for this CPU (hence ``_cpu_tag`` in the build's name). 256-bit vectors: with
head_dim 64, 512-bit ones made decode attention 1.35x slower (horizontal sums dominate)."""

_module: ModuleType | None = None
_build_error: NativeBuildError | None = None


def load() -> ModuleType:
    """The kernels' module: built (or loaded from the build cache) on the first call, the
    same module after; raises NativeBuildError, then again on every later call, when they
    do not build."""
    global _module, _build_error
    if _build_error is not None:  # failed once in this process: do not build again
        raise _build_error
    if _module is None:
        from torch.utils.cpp_extension import load as load_extension

        if not is_built():  # build_runtime says so on the console (toolkit.runtime.waiting)
            logger.debug("building the native CPU kernels (once, ~30 s; cached under %s)",
                         build_directory().parent)
        try:
            _module = load_extension(
                name=_extension_name(), sources=[str(path) for path in SOURCES],
                extra_cflags=CFLAGS, extra_ldflags=["-fopenmp"], verbose=False)
        except (OSError, RuntimeError, ImportError, subprocess.SubprocessError) as exc:
            _build_error = NativeBuildError(f"building {SOURCE.name} failed: "
                                            f"{str(exc).strip().splitlines()[-1]}")
            raise _build_error from exc
    return _module


def _extension_name() -> str:
    return f"toolkit_cpu_ops_{_cpu_tag()}_{_source_tag()}"


def _source_tag() -> str:
    """A short hash of the sources: each version of the kernels builds in a directory of its
    own, so two checkouts of different versions sharing one build cache never rebuild
    over each other, nor load the other's build (whose functions take other arguments)."""
    digest = hashlib.sha1()
    for path in (*SOURCES, *HEADERS):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def build_directory() -> pathlib.Path:
    """Where torch.utils.cpp_extension builds (and caches) this CPU's kernels."""
    from torch.utils.cpp_extension import _get_build_directory

    return pathlib.Path(_get_build_directory(_extension_name(), verbose=False))


def is_built() -> bool:
    """True when ``load()`` will not compile: the kernels are loaded in this process, or
    their cached build is newer than the sources (then loading takes well under a second)."""
    if _module is not None:
        return True
    try:
        built = build_directory() / f"{_extension_name()}.so"
        newest_source = max(path.stat().st_mtime for path in (*SOURCES, *HEADERS))
        return built.is_file() and built.stat().st_mtime >= newest_source
    except (OSError, RuntimeError, ImportError):
        return False


def _cpu_tag() -> str:
    """A short hash of this CPU's model and feature flags: a build cache shared between
    machines (a network home directory) then never hands one CPU another's -march=native."""
    try:
        cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
        lines = [line for line in cpuinfo.splitlines()
                 if line.startswith(("model name", "flags", "Features"))][:2]
    except OSError:
        lines = []
    return hashlib.sha1("\n".join([platform.machine(), *lines]).encode()).hexdigest()[:10]
