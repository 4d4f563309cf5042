"""A continuous-batching scheduler with chunked prefill and preemption by recompute.

Each step: ``schedule()`` picks ``{request: num_tokens}`` under the token budget (running
requests first, then waiting ones in arrival order), the runner executes it, and
``update()`` appends the sampled tokens and retires finished requests.
"""

from __future__ import annotations

from collections import deque

from toolkit.config.schema import SchedulerConfig
from toolkit.kv.block_manager import BlockManager
from toolkit.protocol import Request, RequestStatus, RunnerOutput, SchedulerOutput
from toolkit.protocol.errors import EngineOverloadedError
from toolkit.protocol.outputs import ScheduledRequest


class Scheduler:
    """Owns the waiting queue and the running list; pure Python, unit-testable on CPU."""

    def __init__(self, config: SchedulerConfig, block_manager: BlockManager,
                 max_model_len: int) -> None:
        self.config = config
        self.block_manager = block_manager
        self.max_model_len = max_model_len
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}

    @property
    def num_unfinished(self) -> int:
        return len(self.requests)

    def add_request(self, request: Request) -> None:
        """Queue a new request; EngineOverloadedError when max_waiting are already waiting
        (preempted requests return to the queue regardless)."""
        limit = self.config.max_waiting
        if limit is not None and len(self.waiting) >= limit:
            raise EngineOverloadedError(
                f"the server is overloaded: {limit} requests are already waiting; retry later")
        self.requests[request.request_id] = request
        if self.config.policy == "priority":
            self._insert_by_priority(request)
        else:
            self.waiting.append(request)

    def _insert_by_priority(self, request: Request) -> None:
        """Keep waiting requests ordered by (priority, arrival): lower priority runs first."""
        key = (request.priority, request.arrival_time)
        index = next((i for i, r in enumerate(self.waiting)
                      if (r.priority, r.arrival_time) > key), len(self.waiting))
        self.waiting.insert(index, request)

    def finish_request(self, request_id: str, status: RequestStatus) -> Request | None:
        """Retire a request (abort, stop string) and free its pages; None if unknown."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return None
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
        request.status = status
        self.block_manager.free(request)
        return request

    def schedule(self) -> SchedulerOutput:
        output = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        budget = self._schedule_running(output, budget)
        if not output.preempted_ids:
            self._schedule_waiting(output, budget)
        return output

    def _schedule_running(self, output: SchedulerOutput, budget: int) -> int:
        index = 0
        while index < len(self.running) and budget > 0:
            request = self.running[index]
            num_tokens = min(request.num_tokens - request.num_computed_tokens, budget)
            if not self._allocate_or_preempt(request, num_tokens, output):
                break
            output.scheduled.append(
                ScheduledRequest(request, request.num_computed_tokens, num_tokens))
            budget -= num_tokens
            index += 1
        return budget

    def _allocate_or_preempt(self, request: Request, num_tokens: int,
                             output: SchedulerOutput) -> bool:
        """Find pages for the request, preempting the latest-admitted running requests
        (possibly this one) until it fits."""
        target = request.num_computed_tokens + num_tokens
        while not self.block_manager.allocate(request, target):
            victim = self.running.pop()
            self._preempt(victim)
            output.preempted_ids.append(victim.request_id)
            if victim is request:
                return False
        return True

    def _preempt(self, request: Request) -> None:
        self.block_manager.free(request)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.waiting.appendleft(request)

    def _schedule_waiting(self, output: SchedulerOutput, budget: int) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting[0]
            num_tokens = request.num_tokens - request.num_computed_tokens
            if num_tokens > budget:
                if not self.config.enable_chunked_prefill:
                    break
                num_tokens = budget
            if not self.block_manager.allocate(request, request.num_computed_tokens + num_tokens):
                break
            self.waiting.popleft()
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            output.scheduled.append(
                ScheduledRequest(request, request.num_computed_tokens, num_tokens))
            budget -= num_tokens

    def update(self, output: SchedulerOutput, runner_output: RunnerOutput) -> list[Request]:
        """Advance KV progress, append sampled tokens, retire finished requests.

        Returns the requests that received a token this step (finished ones included).
        """
        advanced = []
        for item in output.scheduled:
            request = item.request
            request.num_computed_tokens += item.num_tokens
            token = runner_output.sampled_token_ids.get(request.request_id)
            if token is None:
                continue
            request.output_token_ids.append(token)
            advanced.append(request)
            status = self._stop_status(request, token)
            if status is not None:
                self.finish_request(request.request_id, status)
        return advanced

    def _stop_status(self, request: Request, token: int) -> RequestStatus | None:
        params = request.sampling_params
        if request.num_output_tokens >= params.min_tokens and token in params.stop_ids:
            return RequestStatus.FINISHED_STOPPED
        if request.num_output_tokens >= params.max_tokens:
            return RequestStatus.FINISHED_LENGTH
        if request.num_tokens >= self.max_model_len:
            return RequestStatus.FINISHED_LENGTH
        return None
