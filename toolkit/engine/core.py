"""The synchronous engine: one step = schedule -> execute -> update -> outputs."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from toolkit.engine.metrics import EngineMetrics
from toolkit.engine.output_processor import OutputProcessor
from toolkit.protocol import (
    Request,
    RequestOutput,
    RequestStatus,
    RunnerOutput,
    SamplingParams,
    SchedulerOutput,
)
from toolkit.protocol.multimodal import MultiModalInput
from toolkit.protocol.outputs import ScheduledRequest
from toolkit.runner.model_runner import ENGINE_FAULTS, ModelRunner
from toolkit.scheduler.scheduler import Scheduler

if TYPE_CHECKING:
    from toolkit.guided.compiler import GuidedCompiler

logger = logging.getLogger(__name__)


class EngineCore:
    """Owns the scheduler, the runner and the output processor. Not thread-safe: one
    thread drives it (AsyncEngine's loop, a benchmark, a test)."""

    def __init__(self, scheduler: Scheduler, runner: ModelRunner,
                 output_processor: OutputProcessor, eos_token_ids: tuple[int, ...],
                 guided: GuidedCompiler | None = None) -> None:
        self.scheduler = scheduler
        self.runner = runner
        self.output_processor = output_processor
        self.eos_token_ids = eos_token_ids
        self.metrics = EngineMetrics()
        self.guided = guided
        """Compiles guided requests' grammars; None rejects guided requests."""

    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.num_unfinished > 0

    def add_request(self, request_id: str, prompt_token_ids: list[int],
                    params: SamplingParams, priority: int = 0, grammar: Any = None,
                    multimodal: MultiModalInput | None = None) -> None:
        """Queue a request. A guided one (``params.guided``) uses ``grammar``, compiled
        beforehand off this thread (AsyncEngine does); without it, it is compiled here.
        ``multimodal``: the prompt's images, for a model that takes them."""
        if request_id in self.scheduler.requests:
            raise ValueError(f"request id {request_id!r} is already running")
        if not prompt_token_ids:
            raise ValueError("the prompt has no tokens")
        params = replace(params, eos_token_ids=self.eos_token_ids)
        if multimodal is not None and not self.runner.accepts_images:
            raise ValueError("this model does not accept images")
        request = Request(request_id, list(prompt_token_ids), params, time.monotonic(),
                          priority=priority, multimodal=multimodal)
        self.scheduler.add_request(request)
        try:
            if params.guided is not None:
                self._add_grammar(request_id, params, grammar)
            self.output_processor.add_request(request)
        except Exception:
            self.scheduler.finish_request(request_id, RequestStatus.FINISHED_ABORTED)
            self._release(request_id)
            raise

    def abort_request(self, request_id: str) -> None:
        """Drop a request wherever it is and free its pages (no output)."""
        if self.scheduler.finish_request(request_id, RequestStatus.FINISHED_ABORTED):
            self._release(request_id)
            self.metrics.on_finish(request_id, "abort")

    def step(self) -> list[RequestOutput]:
        """Run one step; return a delta for every request that got a token and a final
        error delta (reason "abort", ``error`` set) for every request that failed in it.

        Fault isolation: a failure pinned on requests (the runner's ``failed``: sampling,
        grammar, prompt logprobs; a forward that fails only with them, see ``_execute``;
        or, here, one request's update, stop checks and output processing) fails only
        those requests, releasing their pages and state; the rest of the batch goes on as
        if they had not been in it. A failure no request owns (scheduling, a forward that
        fails for every request alone, memory exhausted) propagates."""
        scheduler_output = self.scheduler.schedule()
        if scheduler_output.empty:
            return []
        runner_output = self._execute(scheduler_output)
        outputs = [self._fail(request_id, what)
                   for request_id, what in runner_output.failed.items()]
        now = time.monotonic()
        for item in scheduler_output.scheduled:
            request_id = item.request.request_id
            if request_id in runner_output.failed:
                continue
            try:
                output = self._advance(item, runner_output, now)
            except ENGINE_FAULTS:
                raise
            except Exception:
                logger.exception("updating request %s failed; aborting it", request_id)
                output = self._fail(request_id, "output processing")
            if output is not None:
                outputs.append(output)
        return outputs

    def _execute(self, scheduler_output: SchedulerOutput) -> RunnerOutput:
        """The runner's step. When the shared part raises (building the batch, the
        forward), the step is run again request by request: a request that fails alone
        fails ("the forward"), the others keep their results (the same tokens: the engine
        is batch-invariant). When no request runs alone either, or the step held one
        request, nothing owns the failure and it propagates."""
        try:
            return self.runner.execute(scheduler_output)
        except ENGINE_FAULTS:
            raise
        except Exception as batch_failure:
            if len(scheduler_output.scheduled) == 1:
                raise
            logger.exception("a step of %d requests failed; running them one by one",
                             len(scheduler_output.scheduled))
            output = RunnerOutput()
            for item in scheduler_output.scheduled:
                try:
                    output.merge(self.runner.execute(SchedulerOutput([item])))
                except ENGINE_FAULTS:
                    raise
                except Exception:
                    logger.exception("request %s fails alone", item.request.request_id)
                    output.fail(item.request.request_id, "the forward")
            if len(output.failed) == len(scheduler_output.scheduled):
                raise batch_failure from None
            return output

    def _advance(self, item: ScheduledRequest, runner_output: RunnerOutput,
                 now: float) -> RequestOutput | None:
        """One scheduled request's share of the step after the runner: its progress and
        tokens (stop checks), logprobs, grammar end and delta; None when it got no token."""
        request = item.request
        tokens = runner_output.sampled_token_ids.get(request.request_id)
        self._record_verification(item, tokens)
        self.output_processor.record(request.request_id, runner_output)
        drafts = runner_output.draft_token_ids.get(request.request_id, [])
        if not self.scheduler.update_request(item, tokens, drafts):
            return None
        if request.request_id in runner_output.grammar_finished:
            self.scheduler.finish_request(request.request_id, RequestStatus.FINISHED_STOPPED)
        return self._process(request, now)

    def _record_verification(self, item: ScheduledRequest, tokens: list[int] | None) -> None:
        """The acceptance counters of a request that verified drafts this step."""
        if item.draft_token_ids and tokens:
            self.metrics.on_verify(item.num_draft_tokens, len(tokens) - 1)

    def _process(self, request: Request, now: float) -> RequestOutput:
        """A request's delta; finishes it on a stop string and releases it when done."""
        output, stop_hit = self.output_processor.process(request)
        self.metrics.on_token(request.request_id, request.arrival_time,
                              request.num_prompt_tokens, len(output.new_token_ids), now)
        if stop_hit:
            self.scheduler.finish_request(request.request_id, RequestStatus.FINISHED_STOPPED)
        if output.finished:
            self._release(request.request_id)
            self.metrics.on_finish(request.request_id, output.finish_reason)
        return output

    def _fail(self, request_id: str, what: str) -> RequestOutput:
        """Abort a request that failed in this step (``what`` failed): its pages and
        per-request state are released and its final delta carries the error."""
        self.scheduler.finish_request(request_id, RequestStatus.FINISHED_ABORTED)
        self._release(request_id)
        self.metrics.on_finish(request_id, "error")
        return RequestOutput(request_id, [], "", "abort", error=f"{what} failed for this request")

    def num_request_states(self) -> dict[str, int]:
        """Per-request state still held by the scheduler, the output processor and the
        runner (grammar matchers, drafting state); all zero once every request has
        finished or been aborted."""
        return {"scheduler": len(self.scheduler.requests),
                "output_processor": len(self.output_processor),
                **self.runner.num_request_states}

    def _add_grammar(self, request_id: str, params: SamplingParams, grammar: Any) -> None:
        if grammar is None:
            if self.guided is None:
                raise ValueError("guided decoding is not available in this engine")
            grammar = self.guided.compile(params.guided)
        self.runner.add_grammar(request_id, grammar, params.stop_ids)

    def _release(self, request_id: str) -> None:
        self.output_processor.remove(request_id)
        self.runner.release(request_id)

