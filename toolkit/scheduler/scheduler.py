"""A continuous-batching scheduler with chunked prefill and preemption by recompute.

Each step: ``schedule()`` picks ``{request: num_tokens}`` under the token budget (running
requests first, then waiting ones in arrival order), the runner executes it, and
``update()`` appends the sampled tokens and retires finished requests.

Speculative decoding: the runner drafts after sampling and ``update()`` keeps the drafts
on the request; next step a decode with k drafts is scheduled 1 + k tokens (its last token
and as many drafts as the budget and free pages allow, verified in one forward), then
``update()`` appends the 1..k+1 emitted tokens and rewinds ``num_computed_tokens`` over
the rejected drafts. Their K/V slots stay
allocated and are overwritten later; nothing reads them, since page-table lengths come
from ``num_computed_tokens``.
"""

from __future__ import annotations

from collections import deque

from toolkit.config.schema import SchedulerConfig
from toolkit.kv.page_manager import PageManager
from toolkit.protocol import Request, RequestStatus, RunnerOutput, SchedulerOutput
from toolkit.protocol.errors import EngineOverloadedError
from toolkit.protocol.outputs import ScheduledRequest


class Scheduler:
    """Owns the waiting queue and the running list; pure Python, unit-testable on CPU."""

    def __init__(self, config: SchedulerConfig, page_manager: PageManager,
                 max_model_len: int, max_loras: int | None = None) -> None:
        self.config = config
        self.max_loras = max_loras
        """Most distinct LoRA adapters in one step (lora.max_loras); None: no cap. A
        request whose adapter would exceed it waits for a later step."""
        self.page_manager = page_manager
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
        self.page_manager.free(request)
        return request

    def schedule(self) -> SchedulerOutput:
        output = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        adapters: set[str] = set()
        budget = self._schedule_running(output, budget, adapters)
        if not output.preempted_ids:
            self._schedule_waiting(output, budget, adapters)
        return output

    def _admits_adapter(self, request: Request, adapters: set[str]) -> bool:
        """Whether ``request`` fits the step's distinct LoRA adapters ``adapters`` (added
        to them when it does)."""
        name = request.lora_name
        if name is None or name in adapters:
            return True
        if self.max_loras is not None and len(adapters) >= self.max_loras:
            return False
        adapters.add(name)
        return True

    def _schedule_running(self, output: SchedulerOutput, budget: int,
                          adapters: set[str]) -> int:
        index = 0
        while index < len(self.running) and budget > 0:
            request = self.running[index]
            if not self._admits_adapter(request, adapters):
                index += 1
                continue
            item = self._schedule_drafts(request, budget)
            if item is None:
                num_tokens = min(request.num_tokens - request.num_computed_tokens, budget)
                if not self._allocate_or_preempt(request, num_tokens, output):
                    break
                item = ScheduledRequest(request, request.num_computed_tokens, num_tokens)
            output.scheduled.append(item)
            budget -= item.num_tokens
            index += 1
        return budget

    def _schedule_drafts(self, request: Request, budget: int) -> ScheduledRequest | None:
        """A decode's last token plus as many of its drafts as the budget and free pages
        allow; None (schedule it without drafts) when it has none or not even one fits."""
        num_drafts = min(len(request.draft_token_ids), budget - 1)
        start = request.num_computed_tokens
        if (num_drafts <= 0 or request.num_tokens - start != 1
                or not self.page_manager.allocate(request, start + 1 + num_drafts)):
            return None
        return ScheduledRequest(request, start, 1 + num_drafts,
                                request.draft_token_ids[:num_drafts])

    def _allocate_or_preempt(self, request: Request, num_tokens: int,
                             output: SchedulerOutput) -> bool:
        """Find pages for the request, preempting the latest-admitted running requests
        (possibly this one) until it fits."""
        target = request.num_computed_tokens + num_tokens
        while not self.page_manager.allocate(request, target):
            victim = self.running.pop()
            self._preempt(victim)
            output.preempted_ids.append(victim.request_id)
            if victim is request:
                return False
        return True

    def _preempt(self, request: Request) -> None:
        self.page_manager.free(request)
        request.draft_token_ids = []
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.waiting.appendleft(request)

    def _schedule_waiting(self, output: SchedulerOutput, budget: int,
                          adapters: set[str]) -> None:
        """Admit waiting requests in order; one whose LoRA adapter does not fit the step
        is passed over (it keeps its place in the queue)."""
        index = 0
        while (index < len(self.waiting) and budget > 0
               and len(self.running) < self.config.max_num_seqs):
            request = self.waiting[index]
            if not self._admits_adapter(request, adapters):
                index += 1
                continue
            prefix = self.page_manager.find_cached_prefix(request)
            num_computed = request.num_computed_tokens + prefix.num_tokens
            num_tokens = request.num_tokens - num_computed
            if num_tokens > budget:
                if not self.config.enable_chunked_prefill:
                    break
                num_tokens = budget
            if not self.page_manager.allocate(request, num_computed + num_tokens, prefix):
                break
            request.num_computed_tokens = num_computed
            del self.waiting[index]
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            output.scheduled.append(
                ScheduledRequest(request, request.num_computed_tokens, num_tokens))
            budget -= num_tokens

    def update(self, output: SchedulerOutput, runner_output: RunnerOutput) -> list[Request]:
        """Advance KV progress, append sampled tokens, keep next step's drafts, retire
        finished requests.

        Returns the requests that received a token this step (finished ones included).
        """
        return [item.request for item in output.scheduled
                if self.update_request(item, runner_output.sampled_token_ids.get(
                    item.request.request_id), runner_output.draft_token_ids.get(
                    item.request.request_id, []))]

    def update_request(self, item: ScheduledRequest, tokens: list[int] | None,
                       draft_token_ids: list[int] = ()) -> bool:
        """One scheduled request's share of ``update``: advance its KV progress (rewinding
        over rejected drafts), append its emitted ``tokens`` (retiring it on a stop
        condition) and keep ``draft_token_ids`` for the next step; True when it received
        tokens."""
        request = item.request
        request.num_computed_tokens += item.num_tokens
        request.draft_token_ids = []
        if not tokens:
            return False
        num_rejected = item.num_draft_tokens - (len(tokens) - 1)
        request.num_computed_tokens -= max(num_rejected, 0)
        request.draft_token_ids = list(draft_token_ids)
        self._append(request, tokens)
        return True

    def _append(self, request: Request, tokens: list[int]) -> None:
        """Append emitted tokens one by one; the first stop condition finishes the request
        and drops the tokens after it."""
        for token in tokens:
            request.output_token_ids.append(token)
            status = self._stop_status(request, token)
            if status is not None:
                self.finish_request(request.request_id, status)
                return

    def _stop_status(self, request: Request, token: int) -> RequestStatus | None:
        params = request.sampling_params
        if request.num_output_tokens >= params.min_tokens and token in params.stop_ids:
            return RequestStatus.FINISHED_STOPPED
        if request.num_output_tokens >= params.max_tokens:
            return RequestStatus.FINISHED_LENGTH
        if request.num_tokens >= self.max_model_len:
            return RequestStatus.FINISHED_LENGTH
        return None
