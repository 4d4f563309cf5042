"""How one request is sampled, what it reports and when it stops."""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.protocol.guided import GuidedSpec

MIN_TEMPERATURE = 1e-5
"""The smallest temperature above 0: float32 logits divided by less can overflow into NaN
probabilities. The API reads a smaller positive one as 0 (greedy), as vLLM does."""
TOP_K_MAX = 2**63 - 1
"""The largest top_k: the sampler holds it in an int64 tensor (any top_k at least the
vocabulary size keeps every token)."""


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling and stopping rules, validated at construction.

    Raises ``ValueError`` whose message starts with the field's name on an out-of-range
    value; the API turns that into an OpenAI-shaped 400 naming the parameter. The order in
    which the sampler applies these fields is documented in ``toolkit/runner/sampler.py``.
    """

    max_tokens: int = 16
    """Most tokens to generate; the engine also stops at the context length."""
    min_tokens: int = 0
    """EOS and stop_token_ids are masked (and stop strings ignored) until this many tokens."""
    temperature: float = 1.0
    """0 means greedy; otherwise at least MIN_TEMPERATURE."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability sums to top_p."""
    top_k: int = -1
    """Keep the k most likely tokens; -1 (or 0) keeps all."""
    min_p: float = 0.0
    """Drop tokens whose probability is below min_p times the top token's."""
    top_a: float = 0.0
    """Drop tokens whose probability is below top_a times the square of the top token's."""
    tfs: float = 1.0
    """Tail-free sampling: keep tokens until the normalized second derivative of the sorted
    probabilities sums to tfs; 1 disables."""
    typical_p: float = 1.0
    """Locally typical sampling: keep the tokens closest to the expected surprisal until
    their probability sums to typical_p; 1 disables."""
    eta_cutoff: float = 0.0
    """Eta sampling, in units of 1e-4: drop tokens below min(eta, sqrt(eta) * exp(-entropy));
    0 disables."""
    epsilon_cutoff: float = 0.0
    """Epsilon sampling, in units of 1e-4: drop tokens below this probability; 0 disables."""
    smoothing_factor: float = 0.0
    """Quadratic sampling: logit' = max - factor * k * d^2 + factor * s * d^3 around the
    top logit (d = logit - max); 0 disables. At most 100, as smoothing_curve: larger
    products overflow float32 into NaN logits."""
    smoothing_curve: float = 1.0
    """Shape of quadratic sampling: k = (3 - curve) / 2, s = (curve - 1) / 2."""
    presence_penalty: float = 0.0
    """Subtracted from the logit of every token already generated."""
    frequency_penalty: float = 0.0
    """Subtracted once per earlier occurrence of a token in the output."""
    repetition_penalty: float = 1.0
    """Divides positive (multiplies negative) logits of tokens in the prompt or output."""
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, bias) pairs added to the logits, bias in [-100, 100]."""
    allowed_token_ids: tuple[int, ...] | None = None
    """When set, only these token ids can be sampled."""
    bad_words: tuple[str, ...] = ()
    """Words that must not be generated (vLLM's bad_words); the API tokenizes them into
    ``bad_words_token_ids``."""
    bad_words_token_ids: tuple[tuple[int, ...], ...] = ()
    """Token sequences never completed: the last token of each is banned whenever the
    output so far ends with the ones before it (each bad word with and without a leading
    space)."""
    seed: int | None = None
    """Makes this request's samples reproducible whatever else is in the batch."""
    logprobs: int | None = None
    """Report the sampled token's log-probability and this many top alternatives."""
    prompt_logprobs: int | None = None
    """Report log-probabilities of the prompt tokens with this many top alternatives."""
    stop: tuple[str, ...] = ()
    """Strings that end generation."""
    include_stop_str_in_output: bool = False
    """Keep the stop string that ended generation in the text."""
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end generation, in addition to the model's EOS ids."""
    ignore_eos: bool = False
    """Keep generating past EOS (benchmarks)."""
    skip_special_tokens: bool = True
    """Leave special tokens out of the text."""
    spaces_between_special_tokens: bool = True
    """Put spaces around special tokens in the text (when they are kept)."""
    guided: GuidedSpec | None = None
    """Structured output: the text must match this grammar (applied as a token bitmask
    before every other logits processor)."""
    eos_token_ids: tuple[int, ...] = field(default=(), compare=False)
    """Filled by the engine from the model's generation config."""
    lora_name: str | None = None
    """The LoRA adapter the request runs with: its key from the server's LoraManager
    (the API maps a request's ``model`` to it); None runs the base model."""

    def __post_init__(self) -> None:
        for name, ok, rule in self._checks():
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range: {rule}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")

    def _checks(self) -> list[tuple[str, bool, str]]:
        """(field, passes, documented range) for every bounded field."""
        return [
            ("max_tokens", self.max_tokens >= 1, "must be >= 1"),
            ("min_tokens", 0 <= self.min_tokens <= self.max_tokens,
             "must be in [0, max_tokens]"),
            ("temperature", self.temperature == 0.0
             or MIN_TEMPERATURE <= self.temperature <= 100.0,
             f"must be 0 (greedy) or in [{MIN_TEMPERATURE:g}, 100]"),
            ("top_p", 0.0 < self.top_p <= 1.0, "must be in (0, 1]"),
            ("top_k", -1 <= self.top_k <= TOP_K_MAX, "must be -1 (all) or in [0, 2**63 - 1]"),
            ("min_p", 0.0 <= self.min_p <= 1.0, "must be in [0, 1]"),
            ("top_a", 0.0 <= self.top_a <= 1.0, "must be in [0, 1]"),
            ("tfs", 0.0 < self.tfs <= 1.0, "must be in (0, 1]"),
            ("typical_p", 0.0 < self.typical_p <= 1.0, "must be in (0, 1]"),
            ("eta_cutoff", 0.0 <= self.eta_cutoff <= 10_000.0, "must be in [0, 10000]"),
            ("epsilon_cutoff", 0.0 <= self.epsilon_cutoff <= 10_000.0,
             "must be in [0, 10000]"),
            ("smoothing_factor", 0.0 <= self.smoothing_factor <= 100.0, "must be in [0, 100]"),
            ("smoothing_curve", 1.0 <= self.smoothing_curve <= 100.0, "must be in [1, 100]"),
            ("presence_penalty", -2.0 <= self.presence_penalty <= 2.0, "must be in [-2, 2]"),
            ("frequency_penalty", -2.0 <= self.frequency_penalty <= 2.0,
             "must be in [-2, 2]"),
            ("repetition_penalty", 0.01 <= self.repetition_penalty <= 2.0,
             "must be in [0.01, 2]"),
            ("logit_bias", all(-100.0 <= b <= 100.0 and t >= 0 for t, b in self.logit_bias),
             "biases must be in [-100, 100] for token ids >= 0"),
            ("allowed_token_ids", self.allowed_token_ids is None
             or (bool(self.allowed_token_ids) and min(self.allowed_token_ids) >= 0),
             "must be a non-empty list of token ids"),
            ("bad_words", all(w.strip() for w in self.bad_words), "words must be non-empty"),
            ("bad_words_token_ids", all(ids and min(ids) >= 0
                                        for ids in self.bad_words_token_ids),
             "must be non-empty token id sequences"),
            ("logprobs", self.logprobs is None or self.logprobs >= 0, "must be >= 0"),
            ("prompt_logprobs", self.prompt_logprobs is None or self.prompt_logprobs >= 0,
             "must be >= 0"),
        ]

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def has_penalties(self) -> bool:
        """True when a presence, frequency or repetition penalty applies."""
        return (self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
                or self.repetition_penalty != 1.0)

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Every token id that ends generation (EOS unless ignored, then stop_token_ids)."""
        eos = () if self.ignore_eos else self.eos_token_ids
        return (*eos, *self.stop_token_ids)
