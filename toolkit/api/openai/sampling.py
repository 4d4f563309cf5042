"""OpenAI request fields -> validated ``SamplingParams`` (with the context-length rules)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toolkit.api.engine_client import TokenizerClient
from toolkit.api.http.errors import APIError
from toolkit.api.openai.protocol_sampling import SamplingRequest
from toolkit.protocol import GuidedSpec, SamplingParams
from toolkit.protocol.sampling_params import MIN_TEMPERATURE

_LEADING_NAME = re.compile(r"^([a-z_]+)")

GENERATION_CONFIG_KEYS = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
    "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens",
}
"""generation_config.json keys that become request defaults (vLLM's list) -> the request
parameter they default."""

BUILTIN_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0, "top_p": 1.0, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0,
    "max_tokens": None,
}
"""What a request gets when neither it nor the model's generation config sets a value (as
vLLM); max_tokens None: the rest of the context (chat), 16 (completions' own default)."""


def generation_defaults(source: str | Path | None) -> dict[str, Any]:
    """Request defaults from ``source``'s generation_config.json (vLLM's
    --generation-config): ``source`` is a model directory, or none / auto / None for no
    defaults (``toolkit serve`` replaces auto with the model's directory). A directory
    without the file gives no defaults; a missing directory, or a value a request could
    not carry, is a ValueError naming the file."""
    if source is None or str(source) in ("none", "auto"):
        return {}
    directory = Path(source).expanduser()
    if not directory.is_dir():
        raise ValueError(f"server.generation_config={source}: not a directory (use auto, "
                         "none, or a directory holding generation_config.json)")
    path = directory / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    defaults = {param: raw[key] for key, param in GENERATION_CONFIG_KEYS.items()
                if isinstance(raw, dict) and isinstance(raw.get(key), (int, float))
                and not isinstance(raw.get(key), bool)}
    _check_defaults(defaults, path)
    return defaults


def _check_defaults(defaults: dict[str, Any], path: Path) -> None:
    """Cast to the parameters' types; a value SamplingParams refuses is a ValueError."""
    for name in ("top_k", "max_tokens"):
        if name in defaults:
            defaults[name] = int(defaults[name])
    try:
        SamplingParams(**defaults)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def resolve_max_tokens(
    request: SamplingRequest, num_prompt_tokens: int, max_model_len: int, prompt_param: str,
    default: int | None = None,
) -> int:
    """The output budget of one prompt: the requested one, else ``default`` (the model's
    max_new_tokens) within the rest of the context, else the rest of the context.

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
        rest = max_model_len - num_prompt_tokens
        return rest if default is None else min(rest, default)
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
                          bad_words_ids: tuple[tuple[int, ...], ...] = (),
                          defaults: Mapping[str, Any] | None = None) -> SamplingParams:
    """Validated ``SamplingParams``; an out-of-range value is a 400 naming the parameter.
    ``guided``: the output constraint (already validated by the engine); ``bad_words_ids``:
    ``request.bad_words`` tokenized (``bad_words_token_ids``); ``defaults``: values for
    the parameters the request leaves unset (``generation_defaults``: the model's
    generation config); a request's own values win.

    A temperature above 0 but below ``MIN_TEMPERATURE`` samples greedily (vLLM's rule).
    With best_of > n the sampled tokens' logprobs are always computed (the best choices
    are picked by cumulative logprob); the response shows them only when asked.
    """
    kwargs = {name: value for name, value in (defaults or {}).items()
              if name in request.PASSED_THROUGH}
    kwargs.update({
        name: getattr(request, name)
        for name in request.PASSED_THROUGH
        if getattr(request, name) is not None
    })
    if 0.0 < kwargs.get("temperature", 1.0) < MIN_TEMPERATURE:
        kwargs["temperature"] = 0.0  # too small to divide float32 logits by: greedy
    logprobs = request.num_logprobs()
    if logprobs is None and request.num_samples > request.n:
        logprobs = 0
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
            prompt_logprobs=prompt_logprobs_asked(request),
            skip_special_tokens=request.skip_special_tokens,
            spaces_between_special_tokens=request.spaces_between_special_tokens,
            guided=guided,
            bad_words=tuple(request.bad_words or ()),
            bad_words_token_ids=bad_words_ids,
            **kwargs,
        )
    except ValueError as exc:
        raise APIError(str(exc), param=_param_of(str(exc), request), code="invalid_value") from None


def prompt_logprobs_asked(request: SamplingRequest) -> int | None:
    """Alternatives per prompt token the engine computes: the request's prompt_logprobs,
    echo with logprobs (the echoed prompt's logprobs), the larger when both; None when
    neither asks."""
    echoed = request.num_logprobs() if getattr(request, "echo", False) else None
    asked = [k for k in (request.prompt_logprobs, echoed) if k is not None]
    return max(asked) if asked else None


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
