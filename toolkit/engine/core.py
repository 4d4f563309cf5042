"""The synchronous engine: one step = schedule -> execute -> update -> outputs."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from toolkit.engine.metrics import EngineMetrics
from toolkit.engine.output_processor import OutputProcessor
from toolkit.protocol import Request, RequestOutput, RequestStatus, SamplingParams
from toolkit.runner.model_runner import ModelRunner
from toolkit.scheduler.scheduler import Scheduler

logger = logging.getLogger(__name__)


class EngineCore:
    """Owns the scheduler, the runner and the output processor. Not thread-safe: one
    thread drives it (AsyncEngine's loop, a benchmark, a test)."""

    def __init__(self, scheduler: Scheduler, runner: ModelRunner,
                 output_processor: OutputProcessor, eos_token_ids: tuple[int, ...]) -> None:
        self.scheduler = scheduler
        self.runner = runner
        self.output_processor = output_processor
        self.eos_token_ids = eos_token_ids
        self.metrics = EngineMetrics()

    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.num_unfinished > 0

    def add_request(self, request_id: str, prompt_token_ids: list[int],
                    params: SamplingParams, priority: int = 0) -> None:
        if request_id in self.scheduler.requests:
            raise ValueError(f"request id {request_id!r} is already running")
        params = replace(params, eos_token_ids=self.eos_token_ids)
        request = Request(request_id, list(prompt_token_ids), params, time.monotonic(),
                          priority=priority)
        self.output_processor.add_request(request)
        self.scheduler.add_request(request)

    def abort_request(self, request_id: str) -> None:
        """Drop a request wherever it is and free its pages (no output)."""
        if self.scheduler.finish_request(request_id, RequestStatus.FINISHED_ABORTED):
            self._release(request_id)
            self.metrics.on_finish(request_id, "abort")

    def step(self) -> list[RequestOutput]:
        """Run one step; return a delta for every request that got a token."""
        scheduler_output = self.scheduler.schedule()
        if scheduler_output.empty:
            return []
        runner_output = self.runner.execute(scheduler_output)
        advanced = self.scheduler.update(scheduler_output, runner_output)
        self.output_processor.record(runner_output)
        now = time.monotonic()
        outputs = []
        for request in advanced:
            output, stop_hit = self.output_processor.process(request)
            self.metrics.on_token(request.request_id, request.arrival_time,
                                  request.num_prompt_tokens, len(output.new_token_ids), now)
            if stop_hit:
                self.scheduler.finish_request(request.request_id, RequestStatus.FINISHED_STOPPED)
            if output.finished:
                self._release(request.request_id)
                self.metrics.on_finish(request.request_id, output.finish_reason)
            outputs.append(output)
        return outputs

    def _release(self, request_id: str) -> None:
        self.output_processor.remove(request_id)
        self.runner.release(request_id)

