"""What crosses the scheduler -> runner -> engine -> API boundaries in one step."""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.protocol.request import Request


@dataclass
class ScheduledRequest:
    """One request's share of a step: ``num_tokens`` tokens starting at ``start``."""

    request: Request
    start: int
    """Position of the first scheduled token (= num_computed_tokens before the step)."""
    num_tokens: int
    """Tokens fed this step: a prefill chunk, 1 for a decode, 1 + k for a decode with k
    draft tokens."""
    draft_token_ids: list[int] = field(default_factory=list)
    """Speculative decoding: the k proposed tokens fed after the request's last token (the
    first k the runner drafted last step); the runner verifies them from the logits at all
    1 + k positions."""

    @property
    def num_draft_tokens(self) -> int:
        return len(self.draft_token_ids)

    @property
    def samples(self) -> bool:
        """True when this chunk reaches the end of the request's tokens, so it samples."""
        return self.start + self.num_tokens - len(self.draft_token_ids) == self.request.num_tokens


@dataclass
class SchedulerOutput:
    """The scheduler's decision for one step."""

    scheduled: list[ScheduledRequest] = field(default_factory=list)
    preempted_ids: list[str] = field(default_factory=list)
    """Requests whose pages were taken back this step (they will recompute)."""

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)

    @property
    def empty(self) -> bool:
        return not self.scheduled


@dataclass(frozen=True)
class TokenLogprobs:
    """The log-probability of one chosen token and the most likely alternatives."""

    token_id: int
    """The sampled (or, for a prompt, the given) token."""
    logprob: float
    """Its log-probability under the model's raw distribution."""
    rank: int
    """1 + the number of tokens that were more likely."""
    top: tuple[tuple[int, float], ...] = ()
    """(token id, logprob) of the most likely tokens, best first."""


@dataclass
class RunnerOutput:
    """The tokens emitted for each scheduled request that reached the end of its tokens:
    one without speculation; with k drafts, the accepted drafts then one recovered or
    bonus token (1..k+1)."""

    sampled_token_ids: dict[str, list[int]] = field(default_factory=dict)
    logprobs: dict[str, list[TokenLogprobs]] = field(default_factory=dict)
    """For requests that asked for logprobs: one entry per emitted token, in order."""
    prompt_logprobs: dict[str, tuple[int, list[TokenLogprobs]]] = field(default_factory=dict)
    """For requests that asked for prompt logprobs: (index of the first prompt token
    covered, the logprobs of that token and the ones after it in this chunk)."""
    grammar_finished: set[str] = field(default_factory=set)
    """Guided requests whose grammar terminated (or rejected the sampled token) this step;
    the engine finishes them with reason "stop"."""
    failed: dict[str, str] = field(default_factory=dict)
    """Requests whose own work in the step raised, with the work that failed ("sampling",
    "the grammar", "prompt logprobs"); they have no tokens or logprobs here, and the
    engine fails them."""
    draft_token_ids: dict[str, list[int]] = field(default_factory=dict)
    """Speculative decoding: drafts for the next step, proposed after this step's tokens;
    the scheduler budgets 1 + k tokens for them (or fewer, or none)."""

    def merge(self, other: RunnerOutput) -> None:
        """Add ``other``'s results (of other requests) to these."""
        self.sampled_token_ids.update(other.sampled_token_ids)
        self.draft_token_ids.update(other.draft_token_ids)
        self.logprobs.update(other.logprobs)
        self.prompt_logprobs.update(other.prompt_logprobs)
        self.grammar_finished |= other.grammar_finished
        self.failed.update(other.failed)

    def fail(self, request_id: str, what: str) -> None:
        """Mark ``request_id`` failed (``what`` failed) and drop its results."""
        self.failed[request_id] = what
        self.sampled_token_ids.pop(request_id, None)
        self.draft_token_ids.pop(request_id, None)
        self.logprobs.pop(request_id, None)
        self.prompt_logprobs.pop(request_id, None)
        self.grammar_finished.discard(request_id)


@dataclass
class RequestOutput:
    """A delta for one request, as the API streams it."""

    request_id: str
    new_token_ids: list[int]
    new_text: str
    finish_reason: str | None = None
    """None while running; "stop", "length" or "abort" at the end."""
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    error: str | None = None
    """Set when the request failed inside the engine; the API reports it."""
    logprobs: list[TokenLogprobs] | None = None
    """One entry per new token, when the request asked for logprobs."""
    prompt_logprobs: list[TokenLogprobs | None] | None = None
    """On the first delta of a request that asked for them: one entry per prompt token
    (None for the first, which nothing predicts)."""
    cumulative_logprob: float | None = None
    """Sum of the sampled tokens' logprobs so far, when the request asked for logprobs."""

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
