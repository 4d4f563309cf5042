"""Keeps the loaded model across benchmark jobs whose swept keys leave the weights alone."""

from __future__ import annotations

import gc

from toolkit.config.schema import ToolkitConfig
from toolkit.runtime import Runtime, build_runtime, rebuild_engine

WEIGHT_GROUPS = ("model", "quant", "cache", "attention", "device", "speculative")
"""Groups whose values shape the loaded model or its KV pool; a change reloads."""


def weights_key(cfg: ToolkitConfig) -> tuple:
    return tuple(getattr(cfg, group) for group in WEIGHT_GROUPS)


class RuntimePool:
    """Holds at most one runtime. `get` rebuilds only the scheduler and engine around the
    loaded model when WEIGHT_GROUPS match, and loads afresh otherwise."""

    def __init__(self, runtime: Runtime | None = None) -> None:
        self._runtime = runtime
        self.num_loads = 0

    def get(self, cfg: ToolkitConfig) -> Runtime:
        """A runtime for `cfg` whose engine is not started yet."""
        if self._runtime is not None and weights_key(self._runtime.config) == weights_key(cfg):
            self._runtime = rebuild_engine(self._runtime, cfg)
        else:
            self._runtime = None
            gc.collect()
            self._runtime = build_runtime(cfg, engine_thread_only=True)
            self.num_loads += 1
        return self._runtime
