"""One data-parallel replica: the Ray actor that builds a whole runtime and serves the
driver's calls on it, and what it sends back (its facts, errors as values)."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from toolkit.config.schema import ToolkitConfig
from toolkit.engine.metrics import EngineMetrics
from toolkit.protocol import GuidedSpec, RequestOutput, SamplingParams
from toolkit.protocol.errors import EngineDeadError, EngineOverloadedError

logger = logging.getLogger(__name__)

FATAL_EXIT_DELAY_S = 0.5
"""After its engine loop dies, how long a replica lets its error deltas leave before its
process exits (and Ray restarts it)."""


@dataclass(frozen=True)
class RemoteError:
    """An exception raised inside a replica, carried back as a value (a GuidedSpecError
    does not survive pickling, and Ray would wrap the others)."""

    kind: str
    message: str
    param: str | None = None

    @classmethod
    def of(cls, exc: BaseException) -> RemoteError:
        kinds = (EngineOverloadedError, EngineDeadError, ValueError)
        kind = next((k.__name__ for k in kinds if isinstance(exc, k)), "RuntimeError")
        return cls(kind, str(exc), getattr(exc, "param", None))

    def rebuild(self) -> Exception:
        if self.kind == "ValueError" and self.param is not None:
            from toolkit.guided.errors import GuidedSpecError

            return GuidedSpecError(self.param, self.message)
        kinds = {"EngineOverloadedError": EngineOverloadedError,
                 "EngineDeadError": EngineDeadError, "ValueError": ValueError}
        return kinds.get(self.kind, RuntimeError)(self.message)


@dataclass(frozen=True)
class ReplicaInfo:
    """What a replica built, told to the driver once it is up."""

    resolved: Any
    """Its ResolvedConfig."""
    quant_name: str
    pid: int


class ReplicaActor:
    """The body of one replica's Ray actor: a whole runtime and its running engine."""

    def __init__(self, cfg: ToolkitConfig, index: int, build_runtime: Callable) -> None:
        logging.basicConfig(level=getattr(logging, cfg.server.log_level.upper(), logging.INFO))
        self.index = index
        self.runtime = build_runtime(cfg, engine_thread_only=True)
        self.runtime.engine.start(on_fatal=self._exit_soon)

    def _exit_soon(self) -> None:
        """The engine loop died: leave the process so that Ray restarts the replica."""
        logger.error("replica %d: the engine loop died; exiting for Ray to restart it",
                     self.index)
        threading.Timer(FATAL_EXIT_DELAY_S, os._exit, args=(1,)).start()

    def close(self) -> None:
        """Stop the engine and any tensor-parallel ranks of this replica."""
        self.runtime.close()

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(self.runtime.resolved, self.runtime.quant_name, os.getpid())

    def probe(self) -> tuple[dict, EngineMetrics]:
        """(stats with the prefix-cache counters, metrics) of this replica's engine."""
        engine = self.runtime.engine
        counters = self.runtime.core.scheduler.page_manager.prefix_cache_counters()
        return {**engine.stats(), **counters}, engine.metrics

    async def generate(self, request_id: str, prompt_token_ids: list[int],
                       params: SamplingParams, priority: int, multimodal: Any
                       ) -> AsyncIterator[RequestOutput | RemoteError]:
        """The engine's deltas, then a RemoteError if it raised."""
        extra = {} if multimodal is None else {"multimodal": multimodal}
        try:
            async for output in self.runtime.engine.generate(request_id, prompt_token_ids,
                                                             params, priority, **extra):
                yield output
        except Exception as exc:  # noqa: BLE001 - carried to the driver, which raises it
            yield RemoteError.of(exc)

    def abort(self, request_id: str) -> None:
        self.runtime.engine.abort(request_id)

    async def embed(self, prompts: list[list[int]], pooling: str,
                    normalize: bool) -> list[list[float]] | RemoteError:
        try:
            return await self.runtime.engine.embed(prompts, pooling, normalize)
        except Exception as exc:  # noqa: BLE001 - carried to the driver, which raises it
            return RemoteError.of(exc)

    async def validate_guided(self, spec: GuidedSpec) -> RemoteError | None:
        try:
            await self.runtime.engine.validate_guided(spec)
        except Exception as exc:  # noqa: BLE001 - carried to the driver, which raises it
            return RemoteError.of(exc)
        return None


def replica_config(cfg: ToolkitConfig) -> ToolkitConfig:
    """One replica's config: a single engine, with its share of the CPU threads."""
    import torch

    size = cfg.parallel.data_parallel_size
    threads = max(1, (cfg.device.num_threads or torch.get_num_threads()) // size)
    return dataclasses.replace(
        cfg, parallel=dataclasses.replace(cfg.parallel, data_parallel_size=1),
        device=dataclasses.replace(cfg.device, num_threads=threads))
