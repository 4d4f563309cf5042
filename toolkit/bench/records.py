"""The trace of one benchmark request: what the load generator measured, nothing derived."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class RequestRecord:
    """Timestamps (seconds on one monotonic clock) and token counts of one request.

    ``chunk_times`` holds the arrival time of every streamed chunk that carried output; the
    first one is the first token. ``error`` is set when the request failed.
    """

    start: float
    end: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.chunk_times)

    @property
    def ttft(self) -> float:
        """Seconds from send to the first output chunk."""
        return self.chunk_times[0] - self.start

    @property
    def e2e(self) -> float:
        """Seconds from send to the end of the response."""
        return self.end - self.start

    @property
    def itls(self) -> list[float]:
        """Gaps between consecutive output chunks."""
        return [b - a for a, b in zip(self.chunk_times, self.chunk_times[1:])]

    @property
    def tpot(self) -> float | None:
        """Mean seconds per output token after the first; None with one token."""
        if self.num_output_tokens < 2:
            return None
        return (self.end - self.chunk_times[0]) / (self.num_output_tokens - 1)

    def to_dict(self) -> dict:
        return asdict(self)
