"""A worker (ranks 1..N-1 of a TP x PP group): join the group, build the shard, then run
what the driver broadcasts, step by step, until told to stop or the group breaks (a
pipeline stage's forward also receives from the stage before and sends to the next)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from toolkit.attention.forward_batch import ForwardBatch
from toolkit.parallel.micro_batches import forward_in_micro_batches
from toolkit.parallel.shard import (
    ShardSpec,
    build_shard,
    join_stage_groups,
    rank_device,
)

logger = logging.getLogger(__name__)

FORWARD, LOGITS, CONFIGURE, STOP = "forward", "logits", "configure", "stop"
"""The driver's commands: plan and run a ForwardBatch; run the LM head on rows of the last
forward's hidden states; settle determinism (minimum matmul rows, invariant attention);
leave the loop."""


@dataclass(frozen=True)
class GroupSpec:
    """Where the ranks of one group meet (torch.distributed's TCP rendezvous)."""

    init_method: str
    """tcp://HOST:PORT of the driver's store."""
    size: int
    """Ranks in the group, the driver included."""
    timeout_s: float
    """Most seconds a rendezvous or a collective may wait."""


def init_group(group: GroupSpec, rank: int, device: str) -> None:
    """Join the default process group: gloo on the CPU, NCCL on CUDA."""
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda:"):
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=group.init_method, rank=rank,
                            world_size=group.size, timeout=timedelta(seconds=group.timeout_s))


def receive() -> tuple[str, Any]:
    """The driver's next (command, payload)."""
    message: list[Any] = [None]
    dist.broadcast_object_list(message, src=0)
    return message[0]


def send(command: str, payload: Any = None) -> None:
    """Broadcast (command, payload) from the driver (rank 0) to every worker."""
    dist.broadcast_object_list([(command, payload)], src=0)


def on_device(batch: ForwardBatch, device: str) -> ForwardBatch:
    """The driver's batch with its accelerator tensors on this rank's ``device`` (the
    host-side ones stay on the CPU)."""
    moved = {f.name: getattr(batch, f.name).to(device) for f in fields(batch)
             if isinstance(getattr(batch, f.name), torch.Tensor)
             and getattr(batch, f.name).device.type != "cpu"}
    return replace(batch, **moved) if moved else batch


def run_worker(spec: ShardSpec, group: GroupSpec, rank: int, own_gpu: bool = False) -> None:
    """The worker's whole life: join, build, serve commands, leave."""
    if spec.num_threads is not None and spec.device == "cpu":
        torch.set_num_threads(spec.num_threads)
    device = rank_device(spec, rank, own_gpu)
    init_group(group, rank, device)
    try:
        model, attention = build_shard(spec, join_stage_groups(spec, rank), device)
        serve_commands(model, attention, device, spec.num_micro_batches)
    finally:
        dist.destroy_process_group()


@torch.inference_mode()
def serve_commands(model: torch.nn.Module, attention, device: str,
                   num_micro_batches: int = 1) -> None:
    """Run the driver's commands until STOP (each forward in ``num_micro_batches``)."""
    hidden = None
    while True:
        command, payload = receive()
        if command == FORWARD:
            batch = on_device(payload, device)
            hidden = forward_in_micro_batches(model, attention, batch, num_micro_batches)
        elif command == LOGITS:
            model.compute_logits(hidden[payload])  # the last stage returns them to rank 0
        elif command == CONFIGURE:
            model.quant_method.invariant_min_rows = payload["invariant_min_rows"]
            if payload["batch_invariant_attention"]:
                attention.enable_batch_invariance()
        elif command == STOP:
            return
        else:
            raise ValueError(f"unknown command {command!r}")
