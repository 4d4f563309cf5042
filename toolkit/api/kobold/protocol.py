"""KoboldAI API bodies (Aphrodite's ``--launch-kobold-api``), and how their parameter
names map onto ``SamplingParams``. Fields Kobold clients send that have no effect here
(memory, world info, sampler_order, mirostat ...) are ignored, as in Aphrodite."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from toolkit.api.openai.protocol_sampling import SEED_MAX, SEED_MIN

SAMPLING_EPS = 1e-5
"""Below this temperature a request is greedy (Aphrodite's _SAMPLING_EPS)."""

PARAM_NAMES = {
    "repetition_penalty": "rep_pen", "typical_p": "typical", "epsilon_cutoff": "eps_cutoff",
    "stop": "stop_sequence", "max_tokens": "max_length", "seed": "sampler_seed",
}
"""SamplingParams field -> the Kobold parameter it comes from, where the names differ."""


class KoboldGenerateRequest(BaseModel):
    """Body of ``POST /api/v1/generate`` and ``POST /api/extra/generate/stream``; every
    float must be finite (NaN and infinities are a 400 naming the field)."""

    model_config = ConfigDict(allow_inf_nan=False)

    prompt: str = Field(description="The text to continue.")
    max_context_length: int = Field(
        ge=1, description="Context budget: the prompt keeps its last "
        "max_context_length - max_length tokens (capped at the model's context).",
    )
    max_length: int = Field(ge=1, description="Tokens to generate (max_tokens).")
    n: int = Field(1, ge=1, description="How many texts to generate (at most the server's "
                   "max_n).")
    genkey: str | None = Field(None, description="A client key for the generation.")
    rep_pen: float = Field(1.0, description="repetition_penalty.")
    temperature: float = Field(1.0, description="Below 1e-5: greedy (and n = 1).")
    top_k: int = Field(0, description="0 disables (Kobold); otherwise top_k.")
    top_a: float = Field(0.0, description="top_a.")
    top_p: float = Field(1.0, description="top_p.")
    min_p: float = Field(0.0, description="min_p.")
    tfs: float = Field(1.0, description="tfs (0 is read as the smallest positive value).")
    eps_cutoff: float = Field(0.0, description="epsilon_cutoff.")
    eta_cutoff: float = Field(0.0, description="eta_cutoff.")
    typical: float = Field(1.0, description="typical_p.")
    smoothing_factor: float = Field(0.0, description="smoothing_factor.")
    smoothing_curve: float = Field(1.0, description="smoothing_curve.")
    stop_sequence: list[str] | None = Field(None, description="stop strings.")
    include_stop_str_in_output: bool = Field(
        False, description="Keep the stop string in the text."
    )
    sampler_seed: int | None = Field(
        None, ge=SEED_MIN, le=SEED_MAX, description="seed, a signed 64-bit integer."
    )
    use_default_badwordsids: bool = Field(
        False, description="Ban EOS and every token containing '[' or ']' (Aphrodite's "
        "default bad words ids).",
    )


class KoboldTokenCountRequest(BaseModel):
    """Body of ``POST /api/extra/tokencount``."""

    prompt: str = Field(description="The text to count.")
