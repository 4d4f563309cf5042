"""Pipeline parallelism inside a model: which consecutive layers a stage owns, and the
point-to-point messages between stages (vLLM's layout: the embedding on the first stage,
the final norm and the LM head on the last).

Global rank r of a TP x PP group is tensor-parallel rank ``r % TP`` of stage ``r // TP``:
a stage's ranks are neighbours, and rank r talks to the same tensor-parallel rank of the
stages before and after it (r - TP, r + TP). The driver (rank 0) is tensor-parallel rank 0
of the first stage; the last stage's tensor-parallel rank 0 sends it the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


class StageSplitError(ValueError):
    """A model that cannot be split into the asked number of stages."""


def stage_layers(num_layers: int, num_stages: int, stage: int) -> tuple[int, int]:
    """[start, end) of ``stage``'s layers: an even split of ``num_layers`` into
    ``num_stages`` runs of consecutive layers; the remainder goes one layer each to the
    stages just before the last (the last also runs the LM head), as vLLM splits."""
    if num_stages > num_layers:
        raise StageSplitError(f"pipeline_parallel_size={num_stages} is more stages than the "
                              f"model's {num_layers} layers")
    sizes = [num_layers // num_stages] * num_stages
    for extra in range(num_layers % num_stages):
        sizes[-2 - extra] += 1
    start = sum(sizes[:stage])
    return start, start + sizes[stage]


@dataclass(frozen=True)
class PipelineStage:
    """This rank's stage of a pipeline of ``num_stages`` stages, each of
    ``tensor_parallel_size`` ranks, over a model of ``num_layers`` layers."""

    stage: int
    num_stages: int
    num_layers: int
    tensor_parallel_size: int = 1
    tensor_parallel_rank: int = 0

    @property
    def layer_range(self) -> tuple[int, int]:
        """[start, end) of the global layer ids this stage runs."""
        return stage_layers(self.num_layers, self.num_stages, self.stage)

    @property
    def is_first(self) -> bool:
        return self.stage == 0

    @property
    def is_last(self) -> bool:
        return self.stage == self.num_stages - 1

    @property
    def rank(self) -> int:
        """This rank's global rank."""
        return self.stage * self.tensor_parallel_size + self.tensor_parallel_rank

    def receive_activations(self, num_tokens: int, hidden_size: int, dtype: torch.dtype,
                            device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden, residual), [T, hidden] each, from the previous stage."""
        source = self.rank - self.tensor_parallel_size
        hidden = torch.empty(num_tokens, hidden_size, dtype=dtype, device=device)
        residual = torch.empty_like(hidden)
        dist.recv(hidden, src=source)
        dist.recv(residual, src=source)
        return hidden, residual

    def send_activations(self, hidden: torch.Tensor, residual: torch.Tensor) -> None:
        """hidden, residual [T, hidden] -> the next stage."""
        target = self.rank + self.tensor_parallel_size
        dist.send(hidden.contiguous(), dst=target)
        dist.send(residual.contiguous(), dst=target)

    @property
    def returns_logits(self) -> bool:
        """True on the rank that sends the logits to the driver."""
        return self.is_last and self.tensor_parallel_rank == 0 and self.num_stages > 1

    @property
    def receives_logits(self) -> bool:
        """True on the driver (rank 0) when it is not on the last stage."""
        return self.rank == 0 and not self.is_last

    def return_logits(self, logits: torch.Tensor) -> None:
        """logits [N, V] float32 -> the driver."""
        dist.send(logits.contiguous(), dst=0)

    def receive_logits(self, num_rows: int, vocab_size: int,
                       device: torch.device | str) -> torch.Tensor:
        """[N, V] float32 logits from the last stage."""
        logits = torch.empty(num_rows, vocab_size, dtype=torch.float32, device=device)
        dist.recv(logits, src=(self.num_stages - 1) * self.tensor_parallel_size)
        return logits
