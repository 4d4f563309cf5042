"""The request fields chat and text completions share: sampling, stopping, scheduling.

Ranges are checked where the value is used (``SamplingParams``, ``api/sampling.py`` and
``api/validation.py``) so that every bad value is a 400 naming its parameter; here only
what holds for every field (finite floats) and the seed's range.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

SEED_MIN = -(2**63)
"""The smallest accepted seed: a signed 64-bit integer, as in vLLM."""
SEED_MAX = 2**63 - 1
"""The largest accepted seed. ``torch.Generator.manual_seed`` takes [-2**63, 2**64 - 1],
so the per-choice seeds seed + i (i < n <= server.max_n) stay in its range."""


class StreamOptions(BaseModel):
    """Options for a streamed response."""

    include_usage: bool = Field(
        False, description="Send a last chunk with empty choices and the request's token usage."
    )


class JsonSchemaFormat(BaseModel):
    """``response_format.json_schema``: a named schema."""

    name: str = Field("response", description="The schema's name.")
    description: str | None = Field(None, description="What the response is for.")
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="The JSON schema the output must match."
    )
    strict: bool | None = Field(
        None, description="Exact adherence; outputs always match the schema here."
    )


class ResponseFormat(BaseModel):
    """OpenAI's output format: text, json_object (any JSON object) or json_schema."""

    type: Literal["text", "json_object", "json_schema"] = Field(
        "text", description="text, json_object or json_schema."
    )
    json_schema: JsonSchemaFormat | None = Field(
        None, description="The schema, for type json_schema."
    )


class GuidedRequest(BaseModel):
    """Structured outputs: vLLM's and Aphrodite's guided_* extras and OpenAI's
    response_format. At most one constraint per request."""

    guided_json: str | dict[str, Any] | None = Field(
        None, description="A JSON schema (object or JSON text) the output must match."
    )
    guided_regex: str | None = Field(None, description="A regex the output must match.")
    guided_choice: list[str] | None = Field(
        None, description="The output is exactly one of these strings."
    )
    guided_grammar: str | None = Field(
        None, description="An EBNF (GBNF) grammar with a `root` rule, or a Lark grammar."
    )
    guided_whitespace_pattern: str | None = Field(
        None, description="JSON only: allow flexible whitespace between JSON tokens "
        "(spaces, newlines, tabs); unset means compact single-space separators.",
    )
    guided_decoding_backend: str | None = Field(
        None, description="Only xgrammar is available."
    )
    response_format: ResponseFormat | None = Field(
        None, description="{'type': 'text' | 'json_object' | 'json_schema'}."
    )


class SamplingRequest(GuidedRequest):
    """Fields shared by chat and text completions (OpenAI, vLLM and Aphrodite).

    Every float must be finite: NaN and infinities (``NaN``, ``Infinity``, ``1e999``) are
    a 400 naming the field.
    """

    model_config = ConfigDict(allow_inf_nan=False)

    model: str | None = Field(None, description="A served model name; defaults to the first.")
    temperature: float | None = Field(None, description="0 is greedy. Default 1.")
    top_p: float | None = Field(None, description="Nucleus probability mass (0, 1]. Default 1.")
    n: int = Field(
        1, ge=1, description="How many choices to return for each prompt (at most the "
        "server's max_n).",
    )
    best_of: int | None = Field(
        None, description="Samples drawn per prompt (>= n, at most the server's max_n); "
        "the n with the highest cumulative logprob are returned.",
    )
    stream: bool = Field(False, description="Stream deltas as server-sent events.")
    stream_options: StreamOptions | None = Field(
        None, description="Options for streaming; only allowed with stream=true."
    )
    stop: str | list[str] | None = Field(None, description="Strings that end generation.")
    include_stop_str_in_output: bool = Field(
        False, description="Keep the stop string that ended generation in the text."
    )
    stop_token_ids: list[NonNegativeInt] | None = Field(
        None, description="Token ids that end generation, besides the model's EOS ids."
    )
    ignore_eos: bool = Field(False, description="Keep generating past EOS (benchmarks).")
    min_tokens: int | None = Field(
        None, description="Tokens to generate before EOS or a stop can end generation."
    )
    seed: int | None = Field(
        None, ge=SEED_MIN, le=SEED_MAX,
        description="Reproducible sampling, a signed 64-bit integer; choice i uses seed + i.",
    )
    user: str | None = Field(None, description="End-user id; accepted and ignored.")
    presence_penalty: float | None = Field(None, description="[-2, 2]; default 0.")
    frequency_penalty: float | None = Field(None, description="[-2, 2]; default 0.")
    repetition_penalty: float | None = Field(None, description="[0.01, 2]; default 1 (off).")
    logit_bias: dict[str, float] | None = Field(
        None, description="Token id (as a string) -> bias in [-100, 100]."
    )
    allowed_token_ids: list[NonNegativeInt] | None = Field(
        None, description="Only these token ids may be sampled."
    )
    bad_words: list[str] | None = Field(
        None, description="Words never generated: a word's last token is banned whenever "
        "the output ends with its other tokens (with and without a leading space).",
    )
    top_k: int | None = Field(None, description="Keep the k most likely tokens; -1 keeps all.")
    min_p: float | None = Field(None, description="Drop tokens below min_p * p_max; [0, 1].")
    top_a: float | None = Field(None, description="Drop tokens below top_a * p_max^2; [0, 1].")
    tfs: float | None = Field(None, description="Tail-free sampling (0, 1]; 1 is off.")
    typical_p: float | None = Field(None, description="Locally typical sampling (0, 1].")
    eta_cutoff: float | None = Field(None, description="Eta sampling, units of 1e-4; 0 is off.")
    epsilon_cutoff: float | None = Field(
        None, description="Epsilon sampling, units of 1e-4; 0 is off."
    )
    smoothing_factor: float | None = Field(
        None, description="Quadratic sampling strength [0, 100]; 0 is off."
    )
    smoothing_curve: float | None = Field(None, description="Quadratic sampling curve [1, 100].")
    skip_special_tokens: bool = Field(True, description="Leave special tokens out of the text.")
    spaces_between_special_tokens: bool = Field(
        True, description="Spaces around special tokens (slow tokenizers only)."
    )
    truncate_prompt_tokens: int | None = Field(
        None, description="Keep only the last k prompt tokens (k >= 1)."
    )
    use_beam_search: bool = Field(
        False, description="Beam search with best_of (else n) beams; the n best are "
        "returned. Not with stream, stop strings, logprobs or structured output.",
    )
    length_penalty: float = Field(
        1.0, description="Beam search: score = cumulative logprob / length ** length_penalty; "
        "[-10, 10].",
    )
    early_stopping: bool | Literal["never"] = Field(
        False, description="Beam search: true stops once best_of beams finished; false "
        "when no better one is likely (heuristic); never when none is possible.",
    )
    priority: int = Field(
        0, description="Lower runs earlier; needs the priority scheduling policy."
    )
    prompt_logprobs: int | None = Field(
        None, description="Return the log-probability of every prompt token with this many "
        "alternatives (vLLM): null for the first token, then token id -> {logprob, rank, "
        "decoded_token}. At most the server's max_logprobs; not with stream.",
    )
    request_id: str | None = Field(
        None, min_length=1, description="Used as the response id instead of a fresh one."
    )

    UNSUPPORTED: ClassVar[tuple[str, ...]] = ()
    """Fields rejected when truthy (non-empty, non-zero, true)."""

    PASSED_THROUGH: ClassVar[tuple[str, ...]] = (
        "temperature", "top_p", "top_k", "min_p", "top_a", "tfs", "typical_p", "eta_cutoff",
        "epsilon_cutoff", "smoothing_factor", "smoothing_curve", "presence_penalty",
        "frequency_penalty", "repetition_penalty", "min_tokens", "seed",
    )
    """Fields copied into SamplingParams under the same name when set."""

    def unsupported_params(self) -> list[str]:
        """Names of the fields set to values this server cannot honour."""
        return [name for name in self.UNSUPPORTED if getattr(self, name)]

    @property
    def include_usage(self) -> bool:
        """True when a streamed response must end with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def num_samples(self) -> int:
        """Generations per prompt: best_of, else n."""
        return self.best_of if self.best_of is not None else self.n

    def stop_strings(self) -> tuple[str, ...]:
        """``stop`` as a tuple of strings."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
