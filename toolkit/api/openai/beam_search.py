"""Beam search at the serving level, over the engine (as vLLM v1 does).

Each round asks the engine for one token with its top ``2 * beam_width`` logprobs for
every live beam (the prompt plus the beam's tokens as the request's prompt, so the prefix
cache does the rest). Every (beam, candidate) pair becomes a new beam; a candidate that is
a stop token (EOS unless ignored, stop_token_ids) finishes its beam, the others compete
for the ``beam_width`` live places by cumulative logprob. Beams are scored by

    score = cumulative_logprob / num_tokens ** length_penalty

where num_tokens counts the beam's generated tokens, a final stop token included (HF's
convention; vLLM counts the prompt too). Logprobs are the model's raw distribution, so
sampling parameters (temperature, penalties, biases) do not steer the search.

``early_stopping`` (Aphrodite's and HF's semantics), checked once ``beam_width`` beams have
finished: True stops at once; False stops when the best live beam's current score cannot
beat the worst of the finished ones (a heuristic); "never" stops only when no live beam can
reach a better score at any length up to max_tokens (canonical beam search).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.api.engine_client import EngineClient
from toolkit.api.openai.generation import ChoiceResult, Job, collect
from toolkit.protocol import SamplingParams

EARLY_STOPPING = (True, False, "never")
"""The accepted early_stopping values."""


@dataclass(frozen=True)
class BeamSearchParams:
    """One beam search."""

    beam_width: int
    """Beams kept alive per round, and the most results returned."""
    max_tokens: int
    """Most tokens a beam generates."""
    vocab_size: int
    """The model's vocabulary size (bounds the candidates asked for per beam)."""
    stop_token_ids: tuple[int, ...] = ()
    """Tokens that finish a beam (EOS unless ignore_eos, then stop_token_ids)."""
    length_penalty: float = 1.0
    """Exponent of the length normalization; > 0 favours longer beams."""
    early_stopping: bool | str = False
    """True, False or "never" (see the module docstring)."""

    @property
    def num_candidates(self) -> int:
        """Alternatives asked for per live beam and round."""
        return min(2 * self.beam_width, self.vocab_size)


@dataclass
class Beam:
    """A generated sequence and its cumulative logprob."""

    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float = 0.0
    finish_reason: str | None = None
    """"stop" (a stop token ended it), "length" (max_tokens), None while live."""

    def score(self, length_penalty: float) -> float:
        """cumulative logprob / num_tokens ** length_penalty."""
        return beam_score(self.cumulative_logprob, len(self.token_ids), length_penalty)


def beam_score(cumulative_logprob: float, num_tokens: int, length_penalty: float) -> float:
    """The length-normalized score of a beam of ``num_tokens`` (>= 1) tokens."""
    return cumulative_logprob / (max(num_tokens, 1) ** length_penalty)


async def beam_search(engine: EngineClient, request_id: str, prompt: list[int],
                      params: BeamSearchParams, priority: int = 0) -> list[Beam]:
    """The best ``beam_width`` beams of ``prompt``, best first."""
    live, finished = [Beam()], []
    for step in range(params.max_tokens):
        candidates = await _expand(engine, f"{request_id}-beam{step}", prompt, live, params,
                                   priority)
        live = []
        for beam in sorted(candidates, key=lambda b: b.cumulative_logprob, reverse=True):
            if beam.token_ids[-1] in params.stop_token_ids:
                beam.finish_reason = "stop"
                finished.append(beam)
            elif len(live) < params.beam_width:
                live.append(beam)
        finished = _best(finished, params)
        if not live or _done(finished, live, params, step + 1):
            break
    for beam in live:
        beam.finish_reason = "length"
    return _best(finished + live, params)


async def _expand(engine: EngineClient, round_id: str, prompt: list[int], live: list[Beam],
                  params: BeamSearchParams, priority: int) -> list[Beam]:
    """Every live beam extended by each of its top candidates (one engine request each)."""
    sampling = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True,
                              logprobs=params.num_candidates)
    jobs = [Job(i, f"{round_id}-{i}", prompt + beam.token_ids, sampling, priority)
            for i, beam in enumerate(live)]
    results: list[ChoiceResult] = await collect(engine, jobs)
    candidates = []
    for beam, result in zip(live, results):
        for token_id, logprob in result.logprobs[0].top:
            candidates.append(Beam([*beam.token_ids, token_id],
                                   beam.cumulative_logprob + logprob))
    return candidates


def _best(beams: list[Beam], params: BeamSearchParams) -> list[Beam]:
    """The ``beam_width`` highest-scoring beams, best first."""
    ranked = sorted(beams, key=lambda b: b.score(params.length_penalty), reverse=True)
    return ranked[:params.beam_width]


def _done(finished: list[Beam], live: list[Beam], params: BeamSearchParams,
          num_tokens: int) -> bool:
    """True when no live beam should be extended further (``early_stopping``)."""
    if len(finished) < params.beam_width:
        return False
    if params.early_stopping is True:
        return True
    worst = finished[-1].score(params.length_penalty)
    best_sum = max(b.cumulative_logprob for b in live)
    length = num_tokens
    if params.early_stopping == "never" and params.length_penalty > 0:
        length = params.max_tokens  # logprobs <= 0: the longest length scores highest
    return worst >= beam_score(best_sum, length, params.length_penalty)
