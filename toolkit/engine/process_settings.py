"""Process-wide settings for a long-lived serving process (`toolkit serve`), applied once
the runtime and the app are built.

- glibc's allocator keeps the memory that a step frees: torch allocates each op's output
  with malloc, and glibc hands blocks of more than its mmap threshold (128 KiB at first,
  raised as such blocks are freed) to the kernel and back, so a prefill step of thousands
  of tokens faulted in and zeroed fresh pages for its [T, 3072] activations on every layer.
  The threshold at glibc's ceiling (32 MiB on 64-bit) and the top of the heap kept up to
  1 GiB (M_TRIM_THRESHOLD) keep those blocks in the process. Elsewhere (another libc) this
  is skipped.
- The objects built at start-up (the model, the app, imported modules) are frozen out of
  the garbage collector's passes (``gc.freeze``), which otherwise re-walk them.

Together: w8a8 prefill of 64 prompts of ~190 tokens 2,490 -> 2,600 tokens/s in-process
(docs/performance.md, session 15). Not applied by ``build_runtime``: a test process builds
many runtimes, and a frozen cycle is never collected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""mallopt parameters (glibc's malloc.h)."""
MMAP_THRESHOLD_BYTES = 32 << 20
"""glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)."""
TRIM_THRESHOLD_BYTES = 1 << 30


def settle_for_serving() -> None:
    """Keep freed step buffers in the heap and freeze start-up objects (module docstring)."""
    _keep_freed_memory()
    gc.collect()
    gc.freeze()


def _keep_freed_memory() -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.debug("no mallopt here: the allocator keeps its defaults")
        return
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
            and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)):
        logger.debug("mallopt refused the thresholds: the allocator keeps its defaults")
