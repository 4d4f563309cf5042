"""``use_beam_search`` for chat and text completions: per prompt, the n best of
best_of (else n) beams, as ordinary choices (non-streaming only)."""

from __future__ import annotations

import dataclasses

from toolkit.api.engine_client import EngineClient, TokenizerClient
from toolkit.api.openai.beam_search import Beam, BeamSearchParams, beam_search
from toolkit.api.openai.generation import ChoiceResult
from toolkit.api.openai.protocol_sampling import SamplingRequest
from toolkit.api.openai.sampling import build_sampling_params, resolve_max_tokens
from toolkit.protocol import SamplingParams


async def beam_choices(engine: EngineClient, body: SamplingRequest, prompts: list[list[int]],
                       response_id: str, prompt_param: str) -> list[ChoiceResult]:
    """The choices of every prompt, best beam first; index = prompt * n + rank."""
    results = []
    for p, prompt in enumerate(prompts):
        max_tokens = resolve_max_tokens(body, len(prompt), engine.max_model_len, prompt_param)
        sampling = build_sampling_params(body, max_tokens)  # range checks, stop ids, decoding
        sampling = dataclasses.replace(sampling, eos_token_ids=engine.tokenizer.eos_token_ids)
        params = BeamSearchParams(
            beam_width=body.num_samples, max_tokens=max_tokens,
            vocab_size=engine.tokenizer.vocab_size, stop_token_ids=sampling.stop_ids,
            length_penalty=body.length_penalty, early_stopping=body.early_stopping)
        beams = await beam_search(engine, f"{response_id}-{p}", prompt, params, body.priority)
        results.extend(_choice(p * body.n + rank, beam, sampling, engine.tokenizer)
                       for rank, beam in enumerate(beams[:body.n]))
    return results


def _choice(index: int, beam: Beam, sampling: SamplingParams,
            tokenizer: TokenizerClient) -> ChoiceResult:
    """A beam as a choice; a final stop token stays out of the text unless
    include_stop_str_in_output."""
    shown = beam.token_ids
    if beam.finish_reason == "stop" and not sampling.include_stop_str_in_output:
        shown = shown[:-1]
    text = tokenizer.decode(shown, skip_special_tokens=sampling.skip_special_tokens)
    return ChoiceResult(index, text=text, finish_reason=beam.finish_reason,
                        num_output_tokens=len(beam.token_ids), token_ids=list(beam.token_ids),
                        cumulative_logprob=beam.cumulative_logprob)
