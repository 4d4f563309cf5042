"""Engine counters and latency histograms, updated by the engine thread once per step.

Pure Python; ``toolkit.api.http.metrics`` reads them at scrape time for ``GET /metrics``.
Readers in other threads may see a step half-applied, which is fine for monitoring.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds of the time-to-first-token histogram, in seconds."""
ITL_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds of the inter-token latency histogram, in seconds."""


@dataclass
class Histogram:
    """Cumulative-bucket histogram as Prometheus defines it (``le`` buckets, sum, count)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= bound) per bucket, +Inf excluded."""
        result, running = [], 0
        for bound, count in zip(self.bounds, self.counts):
            running += count
            result.append((bound, running))
        return result


@dataclass
class EngineMetrics:
    """Token counters, TTFT / ITL histograms and speculative-decoding acceptance."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    num_draft_tokens: int = 0
    """Draft tokens the target verified (speculative decoding)."""
    num_accepted_tokens: int = 0
    """Draft tokens the target accepted."""
    num_verifications: int = 0
    """(request, step) pairs that verified at least one draft."""
    finished_requests: dict[str, int] = field(default_factory=dict)
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS_S))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS_S))
    _last_token_time: dict[str, float] = field(default_factory=dict)

    def on_token(self, request_id: str, arrival_time: float, num_prompt_tokens: int,
                 num_new_tokens: int, now: float) -> None:
        """A request received ``num_new_tokens`` tokens at ``now`` (monotonic seconds)."""
        last = self._last_token_time.get(request_id)
        if last is None:
            self.prompt_tokens += num_prompt_tokens
            self.ttft.observe(now - arrival_time)
        else:
            self.itl.observe(now - last)
        self._last_token_time[request_id] = now
        self.generation_tokens += num_new_tokens

    def on_verify(self, num_drafts: int, num_accepted: int) -> None:
        """One request verified ``num_drafts`` drafts and accepted ``num_accepted``."""
        self.num_verifications += 1
        self.num_draft_tokens += num_drafts
        self.num_accepted_tokens += num_accepted

    @property
    def acceptance_rate(self) -> float:
        """Accepted / verified draft tokens; 0.0 before any verification."""
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per verification: 1 + accepted drafts (vLLM's mean acceptance
        length, counting the recovered or bonus token); 0.0 before any verification."""
        if not self.num_verifications:
            return 0.0
        return 1.0 + self.num_accepted_tokens / self.num_verifications

    def on_finish(self, request_id: str, reason: str) -> None:
        self._last_token_time.pop(request_id, None)
        self.finished_requests[reason] = self.finished_requests.get(reason, 0) + 1
