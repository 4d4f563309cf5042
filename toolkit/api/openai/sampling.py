"""OpenAI request fields -> validated ``SamplingParams`` (with the context-length rules)."""

from __future__ import annotations

import dataclasses
import re

from toolkit.api.engine_client import TokenizerClient
from toolkit.api.http.errors import APIError
from toolkit.api.openai.protocol_sampling import SamplingRequest
from toolkit.protocol import GuidedSpec, SamplingParams
from toolkit.protocol.sampling_params import MIN_TEMPERATURE

_LEADING_NAME = re.compile(r"^([a-z_]+)")


def resolve_max_tokens(
    request: SamplingRequest, num_prompt_tokens: int, max_model_len: int, prompt_param: str
) -> int:
    """The output budget of one prompt: the requested one, else the rest of the context.

    A prompt that fills the context, or a budget that does not fit beside the prompt, is a
    400 with code ``context_length_exceeded``.
    """
    if num_prompt_tokens >= max_model_len:
        raise APIError(
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"request has {num_prompt_tokens} input tokens. Please reduce the length of the "
            "input.",
            param=prompt_param,
            code="context_length_exceeded",
        )
    requested = request.requested_max_tokens()
    if requested is None:
        return max_model_len - num_prompt_tokens
    if requested >= 1 and num_prompt_tokens + requested > max_model_len:
        raise APIError(
            f"'{request.max_tokens_param}' is too large: {requested}. This model's maximum "
            f"context length is {max_model_len} tokens and your request has "
            f"{num_prompt_tokens} input tokens ({requested} > {max_model_len} - "
            f"{num_prompt_tokens}).",
            param=request.max_tokens_param,
            code="context_length_exceeded",
        )
    return requested


def bad_words_token_ids(tokenizer: TokenizerClient,
                        words: list[str] | None) -> tuple[tuple[int, ...], ...]:
    """Each bad word tokenized as it stands and after a space (mid-text), without
    duplicates (vLLM's bad_words). An empty word stays empty (SamplingParams rejects it)."""
    sequences: dict[tuple[int, ...], None] = {}
    for word in words or ():
        for text in (word.lstrip(), " " + word.lstrip()):
            ids = tuple(tokenizer.encode(text, add_special_tokens=False)) if word.strip() else ()
            sequences[ids] = None
    return tuple(sequences)


def build_sampling_params(request: SamplingRequest, max_tokens: int,
                          guided: GuidedSpec | None = None,
                          bad_words_ids: tuple[tuple[int, ...], ...] = ()) -> SamplingParams:
    """Validated ``SamplingParams``; an out-of-range value is a 400 naming the parameter.
    ``guided``: the output constraint (already validated by the engine); ``bad_words_ids``:
    ``request.bad_words`` tokenized (``bad_words_token_ids``).

    A temperature above 0 but below ``MIN_TEMPERATURE`` samples greedily (vLLM's rule).
    With best_of > n the sampled tokens' logprobs are always computed (the best choices
    are picked by cumulative logprob); the response shows them only when asked.
    """
    kwargs = {
        name: getattr(request, name)
        for name in request.PASSED_THROUGH
        if getattr(request, name) is not None
    }
    if 0.0 < kwargs.get("temperature", 1.0) < MIN_TEMPERATURE:
        kwargs["temperature"] = 0.0  # too small to divide float32 logits by: greedy
    logprobs = request.num_logprobs()
    if logprobs is None and request.num_samples > request.n:
        logprobs = 0
    echo_logprobs = getattr(request, "echo", False) and request.num_logprobs() is not None
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            stop=request.stop_strings(),
            stop_token_ids=tuple(request.stop_token_ids or ()),
            include_stop_str_in_output=request.include_stop_str_in_output,
            ignore_eos=request.ignore_eos,
            logit_bias=tuple((int(t), float(b)) for t, b in (request.logit_bias or {}).items()),
            allowed_token_ids=(tuple(request.allowed_token_ids)
                               if request.allowed_token_ids is not None else None),
            logprobs=logprobs,
            prompt_logprobs=request.num_logprobs() if echo_logprobs else None,
            skip_special_tokens=request.skip_special_tokens,
            spaces_between_special_tokens=request.spaces_between_special_tokens,
            guided=guided,
            bad_words=tuple(request.bad_words or ()),
            bad_words_token_ids=bad_words_ids,
            **kwargs,
        )
    except ValueError as exc:
        raise APIError(str(exc), param=_param_of(str(exc), request), code="invalid_value") from None


def choice_params(params: SamplingParams, n: int) -> list[SamplingParams]:
    """One ``SamplingParams`` per choice; with a seed, choice i samples with seed + i."""
    if params.seed is None:
        return [params] * n
    return [dataclasses.replace(params, seed=params.seed + i) for i in range(n)]


def _param_of(message: str, request: SamplingRequest) -> str | None:
    """The request field a ``SamplingParams`` error message starts with, if any."""
    match = _LEADING_NAME.match(message)
    if match is None:
        return None
    name = match.group(1)
    if name == "max_tokens":
        return request.max_tokens_param
    if name == "logprobs" and "top_logprobs" in type(request).model_fields:
        return "top_logprobs"
    return name if name in type(request).model_fields else None
