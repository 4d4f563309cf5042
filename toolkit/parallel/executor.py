"""The driver's side of tensor and pipeline parallelism (rank 0, in the server process): start the
worker ranks as local processes or Ray actors, join their group, tell them each step, watch
that they live, and stop them."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist

from toolkit.attention.forward_batch import ForwardBatch
from toolkit.config.schema import ParallelConfig
from toolkit.parallel.micro_batches import forward_in_micro_batches
from toolkit.parallel.shard import RankPlace, ShardSpec, join_stage_groups
from toolkit.parallel.worker import (
    CONFIGURE,
    FORWARD,
    LOGITS,
    STOP,
    GroupSpec,
    init_group,
    run_worker,
    send,
)
from toolkit.runner.model_runner import WorkerFault

logger = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.5
"""How often the watchdog looks at the workers."""
STOP_TIMEOUT_S = 10.0
"""Most seconds a worker gets to leave after STOP before it is killed."""
LOST_WORKER_WAIT_S = 2.0
"""After a failed collective, how long to look for the worker that exited."""


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class _LocalWorkers:
    """Ranks 1..N-1 as spawned local processes."""

    def __init__(self, spec: ShardSpec, group: GroupSpec) -> None:
        context = torch.multiprocessing.get_context("spawn")
        self.processes = [context.Process(target=run_worker, args=(spec, group, rank),
                                          name=f"toolkit-tp-rank{rank}", daemon=True)
                          for rank in range(1, group.size)]
        for process in self.processes:
            process.start()

    def exited(self) -> str | None:
        """Which worker has exited and how, or None while all run."""
        for rank, process in enumerate(self.processes, start=1):
            if process.exitcode is not None:
                return f"parallel worker rank {rank} exited (code {process.exitcode})"
        return None

    def join(self, timeout_s: float) -> None:
        for process in self.processes:
            process.join(timeout_s)
            if process.is_alive():
                process.kill()
                process.join()


class _RayWorkers:
    """Ranks 1..N-1 as Ray actors in one placement group (which may span machines)."""

    def __init__(self, spec: ShardSpec, group: GroupSpec, address: str | None) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=True)
        self.ray = ray
        own_gpu = spec.device == "cuda"
        bundle = {"GPU": 1, "CPU": 1} if own_gpu else {"CPU": spec.num_threads or 1}
        self.group = placement_group([bundle] * (group.size - 1), strategy="PACK")
        ray.get(self.group.ready(), timeout=group.timeout_s)
        actor = ray.remote(_RayRank)
        self.actors, self.runs = [], []
        for index, rank in enumerate(range(1, group.size)):
            strategy = PlacementGroupSchedulingStrategy(
                placement_group=self.group, placement_group_bundle_index=index)
            handle = actor.options(scheduling_strategy=strategy,
                                   num_gpus=1 if own_gpu else 0,
                                   num_cpus=bundle["CPU"]).remote()
            self.actors.append(handle)
            self.runs.append(handle.run.remote(spec, group, rank, own_gpu))

    def exited(self) -> str | None:
        done, _ = self.ray.wait(self.runs, num_returns=1, timeout=0)
        if not done:
            return None
        rank = self.runs.index(done[0]) + 1
        try:
            self.ray.get(done[0])
        except Exception as exc:  # noqa: BLE001 - any failure of the actor is the reason
            return f"parallel worker rank {rank} (Ray actor) failed: {exc}"
        return f"parallel worker rank {rank} (Ray actor) exited"

    def join(self, timeout_s: float) -> None:
        self.ray.wait(self.runs, num_returns=len(self.runs), timeout=timeout_s)
        for handle in self.actors:
            self.ray.kill(handle)
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.group)


class _RayRank:
    """The Ray actor of one worker rank: its ``run`` is the worker's whole life."""

    def run(self, spec: ShardSpec, group: GroupSpec, rank: int, own_gpu: bool) -> None:
        run_worker(spec, group, rank, own_gpu)


class TensorParallelExecutor:
    """Rank 0's handle on ranks 1..N-1 (the runner's TensorParallelWorkers).

    ``start`` launches the workers and joins the group; each of the runner's ``forward``
    and ``logits`` broadcasts one command that every worker answers with the same
    collective calls rank 0 then makes. A watchdog thread calls ``on_failure`` once with
    the reason when a worker exits while the group serves.
    """

    def __init__(self, workers: _LocalWorkers | _RayWorkers, size: int,
                 place: RankPlace, num_micro_batches: int = 1) -> None:
        self.workers = workers
        self.size = size
        self.place = place
        """The driver's place: tensor rank 0 of the first pipeline stage."""
        self.num_micro_batches = num_micro_batches
        """Groups of requests each step's forward runs in (ShardSpec.num_micro_batches)."""
        self.on_failure: Callable[[str], None] | None = None
        """Told, once, why the group broke (a worker exited); set by whoever serves."""
        self.failure: str | None = None
        self._stopping = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="tp-watchdog", daemon=True)

    @classmethod
    def start(cls, spec: ShardSpec, config: ParallelConfig) -> TensorParallelExecutor:
        """Launch ranks 1..N-1 (config.distributed_executor_backend) and join their group
        as rank 0; the workers then build their shards while rank 0 builds its own."""
        ray_backend = config.distributed_executor_backend == "ray"
        host = "127.0.0.1"
        if ray_backend:
            import ray.util

            host = ray.util.get_node_ip_address()
        group = GroupSpec(f"tcp://{host}:{_free_port(host)}", spec.world_size,
                          config.init_timeout_s)
        workers = (_RayWorkers(spec, group, config.ray.address) if ray_backend
                   else _LocalWorkers(spec, group))
        init_group(group, 0, "cuda:0" if spec.device == "cuda" else spec.device)
        executor = cls(workers, group.size, join_stage_groups(spec, 0), spec.num_micro_batches)
        executor._watchdog.start()
        return executor

    def parallel(self, rank: int) -> RankPlace:
        """The driver's place (``rank`` 0) in this group, for build_shard."""
        if rank != 0:
            raise ValueError("only the driver (rank 0) builds its shard through the executor")
        return self.place

    def forward(self, batch: ForwardBatch) -> None:
        send(FORWARD, batch)

    def run_forward(self, model: torch.nn.Module, attention, batch: ForwardBatch
                    ) -> torch.Tensor:
        """The driver's own part of the forward ``forward`` told the workers of: the same
        micro-batches every rank runs -> [T, hidden] (off the last stage: only its row
        count means anything)."""
        return forward_in_micro_batches(model, attention, batch, self.num_micro_batches)

    def logits(self, rows: torch.Tensor | slice) -> None:
        send(LOGITS, rows)

    def configure(self, invariant_min_rows: int, batch_invariant_attention: bool) -> None:
        """Give the workers rank 0's determinism settings (after it settled them)."""
        send(CONFIGURE, {"invariant_min_rows": invariant_min_rows,
                         "batch_invariant_attention": batch_invariant_attention})

    @contextlib.contextmanager
    def collective(self, what: str) -> Iterator[None]:
        """Any failure inside is a WorkerFault: the ranks are out of step."""
        if self.failure is not None:
            raise WorkerFault(self.failure)
        try:
            yield
        except Exception as exc:
            raise WorkerFault(f"tensor parallelism: {what} failed: "
                              f"{self._lost_worker() or _first_line(exc)}") from exc

    def _lost_worker(self) -> str | None:
        """Which worker has exited, waiting briefly for its exit to show (a collective
        sees a closed connection before the process table does)."""
        deadline = time.monotonic() + LOST_WORKER_WAIT_S
        while (reason := self.workers.exited()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return reason

    def close(self) -> None:
        """Stop the workers (killing any that do not leave) and leave the group."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self.failure is None:
            with contextlib.suppress(Exception):
                send(STOP)
        self.workers.join(STOP_TIMEOUT_S)
        with contextlib.suppress(Exception):
            dist.destroy_process_group()

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_INTERVAL_S):
            reason = self.workers.exited()
            if reason is not None and not self._stopping.is_set():
                logger.error("%s", reason)
                self.failure = reason
                if self.on_failure is not None:
                    self.on_failure(reason)
                return

    def __enter__(self) -> TensorParallelExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
