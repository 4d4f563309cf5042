"""Executes one scheduled step: build the batch, plan attention, run the model, sample."""

from __future__ import annotations

import torch

from toolkit.attention.base import AttentionBackend
from toolkit.protocol import RunnerOutput, SchedulerOutput
from toolkit.runner.batch_builder import build_forward_batch
from toolkit.runner.sampler import sample


class ModelRunner:
    """Owns the model, the attention backend and the per-request sampling generators."""

    def __init__(self, model: torch.nn.Module, attention: AttentionBackend, page_size: int,
                 device: torch.device | str) -> None:
        self.model = model
        self.attention = attention
        self.page_size = page_size
        self.device = device
        self._generators: dict[str, torch.Generator] = {}

    @torch.inference_mode()
    def execute(self, scheduler_output: SchedulerOutput) -> RunnerOutput:
        scheduled = scheduler_output.scheduled
        batch = build_forward_batch(scheduled, self.page_size, self.device)
        self.attention.plan(batch)
        hidden = self.model(batch.input_ids, batch.positions, self.attention)  # [T, H]
        sampling = [s.request for s in scheduled if s.samples]
        if not sampling:
            return RunnerOutput()
        logits = self.model.compute_logits(hidden[batch.logits_indices])  # [N, V] float32
        params = [r.sampling_params for r in sampling]
        generators = [self._generator(r.request_id, r.sampling_params.seed) for r in sampling]
        token_ids = sample(logits, params, generators).tolist()
        return RunnerOutput({r.request_id: t for r, t in zip(sampling, token_ids)})

    def release(self, request_id: str) -> None:
        """Forget a finished request's generator."""
        self._generators.pop(request_id, None)

    def _generator(self, request_id: str, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        if request_id not in self._generators:
            self._generators[request_id] = torch.Generator(self.device).manual_seed(seed)
        return self._generators[request_id]
