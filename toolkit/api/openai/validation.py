"""Request checks that need more than one field or the server's state; each failure is a
400 naming the parameter (pydantic and SamplingParams check the plain ranges)."""

from __future__ import annotations

from toolkit.api.context import ServingContext
from toolkit.api.http.errors import APIError, unsupported
from toolkit.api.openai.protocol import ChatCompletionRequest
from toolkit.api.openai.protocol_sampling import SamplingRequest

CHAT_TOP_LOGPROBS_MAX = 20
"""OpenAI's documented upper bound of top_logprobs."""

LENGTH_PENALTY_MAX = 10.0
"""Beam search's length_penalty is in [-10, 10]: num_tokens ** length_penalty then stays a
finite, non-zero float for any context length (a larger one overflows or divides by 0)."""


def invalid(param: str, message: str) -> APIError:
    """A 400 ``invalid_value`` naming ``param``."""
    return APIError(message, param=param, code="invalid_value")


def check_request(request: SamplingRequest, ctx: ServingContext) -> None:
    """Every cross-field and server-dependent rule, in the order a client would fix them."""
    names = request.unsupported_params()
    if names:
        raise unsupported(names[0])
    if request.stream_options is not None and not request.stream:
        raise invalid("stream_options", "stream_options is only allowed when stream is true")
    for param in ("n", "best_of"):
        check_max_n(param, getattr(request, param), ctx.max_n)
    _check_beam_options(request)
    _check_best_of(request)
    _check_logprobs(request, ctx.max_logprobs)
    _check_token_ids(request, ctx.engine.tokenizer.vocab_size)
    if request.priority != 0 and not ctx.engine.supports_priority:
        raise invalid("priority", "priority is only supported with the priority scheduling "
                      "policy (scheduler.policy=priority)")
    if request.truncate_prompt_tokens is not None and request.truncate_prompt_tokens < 1:
        raise invalid("truncate_prompt_tokens", "truncate_prompt_tokens must be >= 1")
    if isinstance(request, ChatCompletionRequest):
        _check_chat(request)
    _check_guided(request)


_BEAM_IGNORED = {"bad_words": [], "allowed_token_ids": None, "logit_bias": {},
                 "min_tokens": 0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
                 "repetition_penalty": 1.0}
"""Logits processors beam search cannot apply (it ranks by the raw logprobs, as vLLM
does), with their neutral values."""


def check_max_n(param: str, value: int | None, max_n: int) -> None:
    """A 400 when a sample count (n, best_of) is more than the server's max_n: each sample
    is a whole generation."""
    if value is not None and value > max_n:
        raise invalid(param, f"{param}={value} is more than this server's max_n ({max_n})")


def _check_beam_options(request: SamplingRequest) -> None:
    """Beam options need use_beam_search; beam search is neither streamed nor combined
    with what it cannot honour (stop strings, logprobs, logits processors; structured
    output: serving_base)."""
    if not request.use_beam_search:
        if request.length_penalty != 1.0:
            raise invalid("length_penalty", "length_penalty only applies to beam search "
                          "(use_beam_search=true); leave it at 1")
        if request.early_stopping is not False:
            raise invalid("early_stopping", "early_stopping only applies to beam search "
                          "(use_beam_search=true)")
        return
    conflicts = [("stream", request.stream), ("stop", request.stop_strings()),
                 ("logprobs", request.num_logprobs() is not None),
                 ("prompt_logprobs", request.prompt_logprobs is not None),
                 *((name, getattr(request, name) not in (None, neutral))
                   for name, neutral in _BEAM_IGNORED.items())]
    for param, present in conflicts:
        if present:
            raise invalid(param, f"{param} cannot be combined with use_beam_search")
    if not -LENGTH_PENALTY_MAX <= request.length_penalty <= LENGTH_PENALTY_MAX:
        raise invalid("length_penalty", f"length_penalty={request.length_penalty} is out of "
                      f"range: must be in [-{LENGTH_PENALTY_MAX:g}, {LENGTH_PENALTY_MAX:g}]")


def _check_best_of(request: SamplingRequest) -> None:
    if request.best_of is None:
        return
    if request.best_of < request.n:
        raise invalid("best_of", f"best_of must be >= n ({request.n}), got {request.best_of}")
    if request.stream and request.best_of > request.n:
        raise invalid("best_of", "best_of > n cannot be streamed")


def _check_logprobs(request: SamplingRequest, max_logprobs: int) -> None:
    if isinstance(request, ChatCompletionRequest):
        if request.top_logprobs is not None:
            if not 0 <= request.top_logprobs <= CHAT_TOP_LOGPROBS_MAX:
                raise invalid("top_logprobs", "top_logprobs must be in [0, 20]")
            if request.top_logprobs and not request.logprobs:
                raise invalid("top_logprobs", "top_logprobs needs logprobs=true")
        param = "top_logprobs"
    else:
        param = "logprobs"
    asked = request.num_logprobs()
    if asked is not None and asked < 0:
        raise invalid(param, f"{param} must be >= 0")
    if asked is not None and asked > max_logprobs:
        raise invalid(param, f"{param}={asked} is more than this server's max_logprobs "
                      f"({max_logprobs})")
    _check_prompt_logprobs(request, max_logprobs)


def _check_prompt_logprobs(request: SamplingRequest, max_logprobs: int) -> None:
    """prompt_logprobs (vLLM): in [0, max_logprobs], and not streamed (the prompt's
    logprobs arrive with a whole response)."""
    asked = request.prompt_logprobs
    if asked is None:
        return
    if asked < 0:
        raise invalid("prompt_logprobs", f"prompt_logprobs={asked} must be >= 0")
    if asked > max_logprobs:
        raise invalid("prompt_logprobs", f"prompt_logprobs={asked} is more than this "
                      f"server's max_logprobs ({max_logprobs})")
    if request.stream:
        raise invalid("prompt_logprobs", "prompt_logprobs is not available with stream=true")


def _check_token_ids(request: SamplingRequest, vocab_size: int) -> None:
    for token in (request.logit_bias or {}):
        if not token.lstrip("-").isdigit() or not 0 <= int(token) < vocab_size:
            raise invalid("logit_bias", f"logit_bias key {token!r} is not a token id in "
                          f"[0, {vocab_size})")
    for param in ("allowed_token_ids", "stop_token_ids"):
        bad = [t for t in getattr(request, param) or () if t >= vocab_size]
        if bad:
            raise invalid(param, f"token id {bad[0]} is out of range for a vocabulary of "
                          f"{vocab_size} tokens")


def _check_guided(request: SamplingRequest) -> None:
    """A grammar may allow only EOS next; min_tokens or allowed_token_ids could then leave
    no token at all, so they do not combine with structured output."""
    guided = [name for name in ("guided_json", "guided_regex", "guided_choice",
                                "guided_grammar") if getattr(request, name) is not None]
    if request.response_format is not None and request.response_format.type != "text":
        guided.append("response_format")
    if isinstance(request, ChatCompletionRequest) and request.tools and (
            request.tool_choice not in (None, "none", "auto")):
        guided.append("tool_choice")
    if not guided:
        return
    for name in ("min_tokens", "allowed_token_ids"):
        if getattr(request, name):
            raise invalid(name, f"{name} cannot be combined with {guided[0]}")


def _check_chat(request: ChatCompletionRequest) -> None:
    if request.continue_final_message and request.add_generation_prompt:
        raise invalid("continue_final_message", "continue_final_message and "
                      "add_generation_prompt cannot both be true")
