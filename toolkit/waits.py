"""Start-up waits that can take seconds: one log line before, one with the time after
(logger ``toolkit.wait``; the CLI shows them as a spinner on a terminal)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.config.schema import ToolkitConfig

wait_logger = logging.getLogger("toolkit.wait")
"""Records carry ``wait``: start or end (toolkit.cli.progress reads it)."""


@contextmanager
def waiting(what: str | None, done: str | None = None) -> Iterator[None]:
    """Log ``what`` before a wait that can take seconds and ``done`` with its duration
    after (INFO, logger ``toolkit.wait``; the records carry ``wait``: start or end, which
    the CLI turns into a spinner on a terminal). ``what`` None: a wait known to be short,
    nothing is logged."""
    if what is None:
        yield
        return
    wait_logger.info("%s ...", what, extra={"wait": "start"})
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        wait_logger.info("%s: failed after %.1f s", what, time.perf_counter() - start,
                         extra={"wait": "end"})
        raise
    wait_logger.info("%s in %.1f s", done or what, time.perf_counter() - start,
                     extra={"wait": "end"})


def model_lookup_wait(cfg: ToolkitConfig) -> tuple[str | None, str | None]:
    """What finding the model waits on: a GGUF conversion that has not happened yet (the
    cache path rule of toolkit.models.source._from_package), a Hugging Face lookup, or
    nothing worth a line (a local directory, a converted GGUF)."""
    from toolkit.models.source import (
        HF_PREFIX,
        PKG_PREFIX,
        cache_root,
        packaged_gguf_path,
    )

    source = cfg.model.source
    if cfg.model.path:
        return None, None
    if source.startswith(PKG_PREFIX):
        gguf = packaged_gguf_path(source)
        target = cache_root() / "models" / gguf.stem
        if target.is_dir():
            return None, None
        return (f"converting {gguf.name} to safetensors (once; into {target})",
                "converted the model")
    if source.startswith(HF_PREFIX):
        return (f"looking up {source.removeprefix(HF_PREFIX)} (local Hugging Face cache, "
                "then the hub)", "found the model")
    return None, None


def kernel_build_wait(cfg: ToolkitConfig) -> tuple[str | None, str | None]:
    """A line only when the native CPU kernels will actually be compiled."""
    from toolkit.kernels import native

    if cfg.device.cpu_kernels == "torch" or native.is_built():
        return None, None
    return (f"building the native CPU kernels with g++ (first start only, ~30 s; cached "
            f"under {native.build_directory().parent}; device.cpu_kernels=torch skips "
            "them)", "built the native CPU kernels")
