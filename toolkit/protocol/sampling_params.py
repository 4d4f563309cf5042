"""How one request is sampled and when it stops."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling and stopping rules, validated at construction.

    Raises ``ValueError`` naming the field on an out-of-range value; the API turns that
    into an OpenAI-shaped 400.
    """

    max_tokens: int = 16
    """Most tokens to generate; the engine also stops at the context length."""
    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability sums to top_p."""
    top_k: int = -1
    """Keep the k most likely tokens; -1 (or 0) keeps all."""
    min_p: float = 0.0
    """Drop tokens whose probability is below min_p times the top token's."""
    seed: int | None = None
    """Makes this request's samples reproducible whatever else is in the batch."""
    stop: tuple[str, ...] = ()
    """Strings that end generation; they are not included in the output text."""
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end generation, in addition to the model's EOS ids."""
    ignore_eos: bool = False
    """Keep generating past EOS (benchmarks)."""
    eos_token_ids: tuple[int, ...] = field(default=(), compare=False)
    """Filled by the engine from the model's generation config."""

    def __post_init__(self) -> None:
        checks = {
            "max_tokens": self.max_tokens >= 1,
            "temperature": 0.0 <= self.temperature <= 100.0,
            "top_p": 0.0 < self.top_p <= 1.0,
            "top_k": self.top_k >= -1,
            "min_p": 0.0 <= self.min_p <= 1.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
