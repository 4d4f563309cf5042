"""How one model is spread over processes and machines."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RayConfig:
    """Where Ray runs the workers of distributed_executor_backend=ray."""

    address: str | None = None
    """A running Ray cluster (`ray start --head` prints it, e.g. 10.0.0.1:6379, or
    `auto`); null starts a local Ray instance in this process."""


@dataclass(frozen=True)
class ParallelConfig:
    """How one model is spread over processes (vLLM's names)."""

    tensor_parallel_size: int = 1
    """Ranks that each hold a slice of every layer (heads, MLP width, vocabulary) and
    all-reduce twice a layer: gloo on the CPU, NCCL on CUDA."""
    pipeline_parallel_size: int = 1
    """Stages of consecutive layers (an even split; the embedding on the first, the LM head
    on the last), each of tensor_parallel_size ranks: tensor_parallel_size x this ranks in
    all."""
    num_micro_batches: int | None = None
    """Groups of consecutive requests each pipeline step is cut into, following each other
    through the stages so that they work at once (GPipe within a step); null:
    pipeline_parallel_size of them, 1: one batch in flight (synchronous). Unused
    without pipeline parallelism."""
    data_parallel_size: int = 1
    """Whole engine replicas behind one endpoint, each a Ray actor with its own runtime and
    KV cache (always Ray, whatever distributed_executor_backend says); requests go to the
    replica holding their prompt's leading pages, else to the least busy one."""
    data_parallel_max_imbalance: int = 8
    """A request whose leading pages were last sent to replica r goes to r unless r has
    more than this many requests in flight beyond the least busy replica."""
    max_replica_restarts: int = 3
    """Times Ray restarts a data-parallel replica actor that died (its in-flight requests
    get a 503; the other replicas keep serving)."""
    distributed_executor_backend: str = "mp"
    """How the tensor-parallel workers start: mp (local processes) or ray (Ray actors in
    a placement group, which may span machines)."""
    ray: RayConfig = field(default_factory=RayConfig)
    """The Ray cluster of distributed_executor_backend=ray."""
    init_timeout_s: float = 300.0
    """Most seconds to wait for every worker to join and load its shard."""
