"""Data parallelism: N whole engine replicas as Ray actors behind one endpoint.

Each replica is a Ray actor that builds its own runtime (``build_runtime`` with
data_parallel_size=1) and runs its AsyncEngine; the driver (the server process) holds a
``DataParallelEngine``, an ``EngineClient`` that routes each request (toolkit.parallel.router:
prefix-cache affinity, then load) and streams the chosen replica's RequestOutput deltas
back through a Ray streaming generator. Ray restarts a replica actor that dies (up to
parallel.max_replica_restarts times); its in-flight requests end with EngineDeadError
(503 ``engine_unavailable``), new ones avoid it until its health probe answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from toolkit.config.schema import ToolkitConfig
from toolkit.engine.metrics import EngineMetrics, Histogram
from toolkit.parallel.replica_actor import (
    RemoteError,
    ReplicaActor,
    ReplicaInfo,
    replica_config,
)
from toolkit.parallel.router import Router
from toolkit.protocol import GuidedSpec, RequestOutput, SamplingParams
from toolkit.protocol.errors import EngineDeadError

logger = logging.getLogger(__name__)

PROBE_INTERVAL_S = 0.5
"""How often the driver asks every replica for its stats and metrics."""
PROBE_TIMEOUT_S = 10.0
"""A replica whose probe has not answered for this long is taken out of routing."""
CLOSE_TIMEOUT_S = 15.0
"""Most seconds the replicas get to close their runtimes before they are killed."""


def merge_metrics(parts: list[EngineMetrics]) -> EngineMetrics:
    """The replicas' counters and histograms summed."""
    merged = EngineMetrics()
    for part in parts:
        merged.prompt_tokens += part.prompt_tokens
        merged.generation_tokens += part.generation_tokens
        merged.num_draft_tokens += part.num_draft_tokens
        merged.num_accepted_tokens += part.num_accepted_tokens
        merged.num_verifications += part.num_verifications
        for reason, count in part.finished_requests.items():
            merged.finished_requests[reason] = merged.finished_requests.get(reason, 0) + count
        _add_histogram(merged.ttft, part.ttft)
        _add_histogram(merged.itl, part.itl)
    return merged


def _add_histogram(into: Histogram, part: Histogram) -> None:
    into.counts = [a + b for a, b in zip(into.counts, part.counts)]
    into.total += part.total
    into.count += part.count


def merge_stats(parts: list[dict]) -> dict:
    """The replicas' engine stats: counts summed, KV cache usage averaged."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
    if parts:
        merged["kv_cache_usage"] = merged.get("kv_cache_usage", 0.0) / len(parts)
    return merged


@dataclass
class _Replica:
    """The driver's view of one replica."""

    index: int
    actor: Any
    up: bool = True
    num_restarts: int = 0
    """Times it was seen down (Ray restarts it up to parallel.max_replica_restarts)."""
    stats: dict = field(default_factory=dict)
    metrics: EngineMetrics = field(default_factory=EngineMetrics)
    probe: Any = None
    probe_since: float = 0.0
    lost_since: float = 0.0
    """When it was last taken out of routing (a probe sent before then does not count)."""


class DataParallelEngine:
    """An ``EngineClient`` over N replica actors (see the module docstring)."""

    def __init__(self, cfg: ToolkitConfig, actors: list[Any], infos: list[ReplicaInfo],
                 tokenizer: Any) -> None:
        import ray

        self.ray = ray
        first = infos[0].resolved
        self.resolved = first
        """Replica 0's ResolvedConfig (every replica builds the same)."""
        self.model_name = cfg.model.name
        self.max_model_len = first.max_model_len
        self.deterministic = all(info.resolved.deterministic for info in infos)
        self.tokenizer = tokenizer
        self.quant_name = infos[0].quant_name
        self.supports_priority = cfg.scheduler.policy == "priority"
        self.max_replica_restarts = cfg.parallel.max_replica_restarts
        self.replicas = [_Replica(i, actor) for i, actor in enumerate(actors)]
        self.router = Router(len(actors), cfg.cache.page_size,
                             cfg.parallel.data_parallel_max_imbalance)
        self._lock = threading.Lock()
        self._requests: dict[str, int] = {}
        """In-flight request id -> its replica."""
        self._stopping = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="dp-monitor", daemon=True)
        self._on_fatal: Callable[[], None] | None = None
        self.owns_ray = False
        """This process started the Ray instance (shutdown stops it)."""

    @classmethod
    def start_replicas(cls, cfg: ToolkitConfig, tokenizer: Any, build_runtime: Callable,
                       on_gpu: bool) -> DataParallelEngine:
        """Start data_parallel_size replica actors (joining parallel.ray.address, or a
        local Ray instance; a GPU each when ``on_gpu``) and wait until each has built its
        runtime with ``build_runtime`` (toolkit.runtime's, passed down the floors)."""
        import ray

        owns_ray = not ray.is_initialized()
        if owns_ray:
            ray.init(address=cfg.parallel.ray.address, include_dashboard=False,
                     log_to_driver=True)
        replica_cfg = replica_config(cfg)
        num_ranks = cfg.parallel.tensor_parallel_size  # local processes of each replica
        resources = ({"num_gpus": num_ranks, "num_cpus": 1} if on_gpu
                     else {"num_cpus": replica_cfg.device.num_threads})
        actor_class = ray.remote(ReplicaActor).options(
            max_restarts=cfg.parallel.max_replica_restarts, max_task_retries=0,
            max_concurrency=1000, **resources)
        actors = [actor_class.remote(replica_cfg, index, build_runtime)
                  for index in range(cfg.parallel.data_parallel_size)]
        try:
            infos = ray.get([actor.info.remote() for actor in actors],
                            timeout=cfg.parallel.init_timeout_s)
        except Exception as exc:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            if owns_ray:
                ray.shutdown()
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None
        for index, info in enumerate(infos):
            logger.info("data-parallel replica %d is up (Ray actor, pid %d)", index, info.pid)
        engine = cls(cfg, actors, infos, tokenizer)
        engine.owns_ray = owns_ray
        return engine

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, on_fatal: Callable[[], None] | None = None) -> None:
        """Watch the replicas; ``on_fatal`` runs once every replica is gone for good."""
        self._on_fatal = on_fatal
        self._monitor.start()

    def shutdown(self) -> None:
        """Stop watching, let each replica close its runtime, then kill the actors (no
        restart)."""
        self._stopping.set()
        if self._monitor.is_alive():
            self._monitor.join()
        closing = [replica.actor.close.remote() for replica in self.replicas]
        self.ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT_S)
        for replica in self.replicas:
            try:
                self.ray.kill(replica.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self.owns_ray:
            self.ray.shutdown()

    @property
    def healthy(self) -> bool:
        """True while some replica serves or may still come back."""
        return any(r.up or r.num_restarts <= self.max_replica_restarts
                   for r in self.replicas)

    # -- EngineClient ------------------------------------------------------------------

    @property
    def metrics(self) -> EngineMetrics:
        """Every replica's last probed counters and histograms, summed."""
        return merge_metrics([replica.metrics for replica in self.replicas])

    def stats(self) -> dict:
        merged = merge_stats([replica.stats for replica in self.replicas])
        with self._lock:
            merged["num_streams"] = len(self._requests)
        merged["healthy"] = self.healthy
        merged["num_replicas"] = len(self.replicas)
        merged["num_replicas_up"] = sum(replica.up for replica in self.replicas)
        return merged

    def replica_stats(self) -> list[dict]:
        """Per replica: requests routed and in flight, whether it serves, restarts seen
        (``/metrics`` labels them by replica), prompt tokens its prefix cache served (as
        last probed)."""
        with self._lock:
            return [{"replica": str(r.index), "num_routed": self.router.num_routed[r.index],
                     "num_in_flight": self.router.num_in_flight[r.index], "up": r.up,
                     "num_restarts": r.num_restarts,
                     "prefix_cache_hits": r.stats.get("prefix_cache_hits", 0)}
                    for r in self.replicas]

    async def generate(self, request_id: str, prompt_token_ids: list[int],
                       params: SamplingParams, priority: int = 0, multimodal: Any = None
                       ) -> AsyncIterator[RequestOutput]:
        """The chosen replica's deltas; EngineDeadError when it is lost mid-stream."""
        index = self._route(request_id, prompt_token_ids)
        actor = self.replicas[index].actor
        finished = False
        try:
            stream = actor.generate.options(num_returns="streaming").remote(
                request_id, list(prompt_token_ids), params, priority, multimodal)
            async for ref in stream:
                item = await ref
                if isinstance(item, RemoteError):
                    finished = True
                    raise item.rebuild()
                finished = item.finished
                yield item
        except self.ray.exceptions.RayError as exc:
            finished = True
            self._lost(index, exc)
            raise EngineDeadError(f"data-parallel replica {index} was lost while serving "
                                  f"this request ({type(exc).__name__}); retry: the other "
                                  "replicas serve") from None
        finally:
            with self._lock:
                self._requests.pop(request_id, None)
                self.router.finished(index)
            if not finished:
                actor.abort.remote(request_id)

    def abort(self, request_id: str) -> None:
        with self._lock:
            index = self._requests.get(request_id)
        if index is not None:
            self.replicas[index].actor.abort.remote(request_id)

    async def embed(self, prompts: list[list[int]], pooling: str = "last",
                    normalize: bool = True) -> list[list[float]]:
        index = self._route(None, [])
        try:
            result = await self.replicas[index].actor.embed.remote(prompts, pooling, normalize)
        except self.ray.exceptions.RayError as exc:
            self._lost(index, exc)
            raise RuntimeError(f"data-parallel replica {index} was lost") from None
        finally:
            with self._lock:
                self.router.finished(index)
        if isinstance(result, RemoteError):
            raise result.rebuild()
        return result

    async def validate_guided(self, spec: GuidedSpec) -> None:
        index = self._route(None, [])
        try:
            error = await self.replicas[index].actor.validate_guided.remote(spec)
        except self.ray.exceptions.RayError as exc:
            self._lost(index, exc)
            raise EngineDeadError(f"data-parallel replica {index} was lost") from None
        finally:
            with self._lock:
                self.router.finished(index)
        if error is not None:
            raise error.rebuild()

    # -- routing and health ------------------------------------------------------------

    def _route(self, request_id: str | None, prompt_token_ids: list[int]) -> int:
        with self._lock:
            if request_id is not None and request_id in self._requests:
                raise ValueError(f"request id {request_id!r} is already in use")
            available = [r.index for r in self.replicas if r.up]
            if not available:
                raise EngineDeadError("no data-parallel replica is serving (they are "
                                      "restarting); retry shortly")
            index = self.router.choose(prompt_token_ids, available)
            if request_id is not None:
                self._requests[request_id] = index
        return index

    def _lost(self, index: int, exc: BaseException) -> None:
        """Take replica ``index`` out of routing until its probe answers again."""
        with self._lock:
            replica = self.replicas[index]
            if not replica.up:
                return
            replica.up = False
            replica.lost_since = time.monotonic()
            replica.num_restarts += 1
            self.router.forget(index)  # a restarted replica's prefix cache is empty
        logger.error("data-parallel replica %d lost (%s); routing around it until Ray "
                     "restarts it", index, f"{type(exc).__name__}: {exc}".splitlines()[0])

    def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._probe_all():
                    return
            except Exception:  # noqa: BLE001 - a monitor that dies would blind the router
                logger.exception("probing the data-parallel replicas failed")
            self._stopping.wait(PROBE_INTERVAL_S)

    def _probe_all(self) -> bool:
        """Probe every replica once; True when every one is gone for good (``on_fatal``
        has run)."""
        now = time.monotonic()
        for replica in self.replicas:
            if replica.probe is None:
                replica.probe, replica.probe_since = replica.actor.probe.remote(), now
        probes = [r.probe for r in self.replicas]
        ready, _ = self.ray.wait(probes, num_returns=len(probes), timeout=PROBE_INTERVAL_S)
        for replica in self.replicas:
            if replica.probe in ready:
                self._probed(replica)
            elif replica.up and time.monotonic() - replica.probe_since > PROBE_TIMEOUT_S:
                self._lost(replica.index, TimeoutError("its probe did not answer"))
        if not self.healthy and self._on_fatal is not None:
            logger.error("every data-parallel replica is gone for good")
            self._on_fatal()
            return True
        return False

    def _probed(self, replica: _Replica) -> None:
        probe, replica.probe = replica.probe, None
        sent_after_loss = replica.probe_since > replica.lost_since
        try:
            replica.stats, replica.metrics = self.ray.get(probe)
        except self.ray.exceptions.RayError as exc:
            self._lost(replica.index, exc)
            return
        serving = bool(replica.stats.get("healthy", False))
        if serving and not replica.up and sent_after_loss:
            logger.info("data-parallel replica %d is back", replica.index)
            with self._lock:
                replica.up = True
        elif not serving:
            self._lost(replica.index, RuntimeError("its engine stopped"))
