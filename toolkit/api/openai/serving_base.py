"""The request flow shared by chat and text completions.

body -> checks -> prompt ids -> one ``Job`` per (prompt, sample) -> the engine ->
best_of selection -> a JSON response, or a server-sent event stream. With
use_beam_search, beam search over the engine replaces the jobs (non-streaming).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from blacksheep import Request, Response
from pydantic import BaseModel

from toolkit.api.context import ServingContext
from toolkit.api.http.body import parse_body
from toolkit.api.http.deadline import Deadline
from toolkit.api.http.disconnect import unless_disconnected
from toolkit.api.http.errors import APIError
from toolkit.api.http.render import json_response, sse_response
from toolkit.api.http.request_log import log_request
from toolkit.api.openai.beam_serving import beam_choices
from toolkit.api.openai.generation import (
    ChoiceResult,
    Job,
    best_choices,
    collect,
    merge_outputs,
    prefetched,
)
from toolkit.api.openai.guided import guided_spec
from toolkit.api.openai.logprobs import LogprobRenderer, PromptLogprobs
from toolkit.api.openai.protocol_sampling import SamplingRequest
from toolkit.api.openai.responses import UsageInfo, new_id, now
from toolkit.api.openai.sampling import (
    bad_words_token_ids,
    build_sampling_params,
    choice_params,
    resolve_max_tokens,
)
from toolkit.api.openai.serving_lora import adapter_key, is_served
from toolkit.api.openai.validation import check_request
from toolkit.protocol import GuidedSpec, RequestOutput

RequestT = TypeVar("RequestT", bound=SamplingRequest)


def check_model(ctx: ServingContext, model: str | None) -> None:
    """404 unless ``model`` is one of the served names or LoRA adapters (or omitted)."""
    if model is not None and not is_served(ctx, model):
        raise APIError(
            f"The model `{model}` does not exist.",
            status=404,
            param="model",
            code="model_not_found",
        )


def check_healthy(ctx: ServingContext) -> None:
    """503 when the engine loop is no longer running."""
    if not ctx.engine.healthy:
        raise APIError(
            "The engine is not running; the server cannot generate.",
            status=503,
            code="engine_unavailable",
        )


def check_prompts(prompts: list[list[int]], param: str) -> None:
    """400 when a prompt has no tokens (an empty string, or a template rendering nothing)."""
    if any(not ids for ids in prompts):
        raise APIError("The prompt has no tokens", param=param, code="invalid_value")


@dataclass
class Turn(Generic[RequestT]):
    """One HTTP request being answered: its body, id, prompts and per-choice stream state."""

    body: RequestT
    response_id: str
    prompts: list[list[int]]
    echo: list[str]
    """Text prepended to each prompt's choices ("" when echo is off)."""
    created: int = field(default_factory=now)
    started: set[int] = field(default_factory=set)
    """Choices whose first delta was streamed."""
    text_offsets: dict[int, int] = field(default_factory=dict)
    """Characters streamed so far per choice (completions logprobs offsets)."""
    guided: GuidedSpec | None = None
    """The output constraint every choice is sampled under."""
    streams: dict[int, Any] = field(default_factory=dict)
    """Per-choice stream state an endpoint keeps (chat: tool-call and reasoning parsing)."""
    multimodal: Any = None
    """The prompt's images (chat with image_url parts), None for text."""

    def echo_of(self, index: int) -> str:
        """The echo text of choice ``index``."""
        return self.echo[index // self.body.n]


class OpenAIServing(ABC, Generic[RequestT]):
    """One generation endpoint; subclasses say how to build prompts and responses."""

    request_model: type[RequestT]
    id_prefix: str
    prompt_param: str

    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx
        self.engine = ctx.engine
        self.logprobs = LogprobRenderer(ctx.engine.tokenizer, ctx.return_tokens_as_token_ids)

    async def handle(self, request: Request) -> Response:
        """Serve one HTTP request end to end."""
        deadline = Deadline.after(self.ctx.request_timeout)
        body = await parse_body(request, self.request_model)
        check_model(self.ctx, body.model)
        check_request(body, self.ctx)
        check_healthy(self.ctx)
        prompts, multimodal = await self.prompts_and_images(body)
        check_prompts(prompts, self.prompt_param)
        turn = Turn(body, body.request_id or new_id(self.id_prefix), prompts,
                    self.echo_texts(body, prompts), guided=await self.guided_spec(body),
                    multimodal=multimodal)
        jobs = self.jobs(turn)
        log_request(self.ctx, turn.response_id, prompts, jobs[0].params)
        num_prompt_tokens = sum(len(ids) for ids in prompts)
        if body.use_beam_search:
            return await self.beam_response(request, turn, deadline, num_prompt_tokens)
        if body.stream:
            first = prefetched(deadline.stream(merge_outputs(self.engine, jobs)))
            stream = await unless_disconnected(request, first)
            return sse_response(request, self.events(turn, stream, num_prompt_tokens))
        results = await unless_disconnected(request, deadline.run(collect(self.engine, jobs)))
        usage = UsageInfo.of(num_prompt_tokens, sum(r.num_output_tokens for r in results))
        chosen = best_choices(results, body.num_samples, body.n)
        return json_response(self.response(turn, chosen, usage))

    async def beam_response(self, request: Request, turn: Turn[RequestT], deadline: Deadline,
                            num_prompt_tokens: int) -> Response:
        """use_beam_search: the n best beams of each prompt as the choices."""
        if adapter_key(self.ctx, turn.body.model) is not None:
            raise APIError("use_beam_search is not supported with a LoRA adapter",
                           param="use_beam_search", code="invalid_value")
        if turn.guided is not None:
            raise APIError(f"{turn.guided.param} cannot be combined with use_beam_search",
                           param=turn.guided.param, code="invalid_value")
        beams = beam_choices(self.engine, turn.body, turn.prompts, turn.response_id,
                             self.prompt_param)
        results = await unless_disconnected(request, deadline.run(beams))
        usage = UsageInfo.of(num_prompt_tokens, sum(r.num_output_tokens for r in results))
        return json_response(self.response(turn, results, usage))

    def jobs(self, turn: Turn[RequestT]) -> list[Job]:
        """One job per (prompt, sample); index = prompt * samples + sample. Parameters
        the request leaves unset take the server's defaults (the model's generation
        config, ``ctx.sampling_defaults``)."""
        body, jobs = turn.body, []
        defaults = self.ctx.sampling_defaults
        bad_words = bad_words_token_ids(self.engine.tokenizer, body.bad_words)
        lora_key = adapter_key(self.ctx, body.model)
        for p, prompt in enumerate(turn.prompts):
            max_tokens = resolve_max_tokens(
                body, len(prompt), self.engine.max_model_len, self.prompt_param,
                defaults.get("max_tokens"),
            )
            params = build_sampling_params(body, max_tokens, turn.guided, bad_words, defaults)
            if lora_key is not None:
                params = replace(params, lora_name=lora_key)
            for i, choice in enumerate(choice_params(params, body.num_samples)):
                index = p * body.num_samples + i
                jobs.append(Job(index, f"{turn.response_id}-{index}", prompt, choice,
                                body.priority, multimodal=turn.multimodal))
        return jobs

    async def events(
        self,
        turn: Turn[RequestT],
        stream: AsyncIterator[tuple[int, RequestOutput]],
        num_prompt_tokens: int,
    ) -> AsyncIterator[str]:
        """The JSON of every stream chunk, ending with the usage chunk when asked for."""
        for chunk in self.opening_chunks(turn, len(turn.prompts) * turn.body.n):
            yield chunk.model_dump_json()
        output_tokens: dict[int, int] = {}
        try:
            async for index, output in stream:
                output_tokens[index] = output.num_output_tokens
                for chunk in self.delta_chunks(turn, index, output):
                    yield chunk.model_dump_json()
                turn.started.add(index)
        finally:
            await stream.aclose()
        if turn.body.include_usage:
            usage = UsageInfo.of(num_prompt_tokens, sum(output_tokens.values()))
            yield self.usage_chunk(turn, usage).model_dump_json()

    async def guided_spec(self, body: RequestT) -> GuidedSpec | None:
        """The request's output constraint, compiled once in the engine (off the event
        loop) so that an invalid schema, regex or grammar is a 400 naming its field."""
        spec = self.output_constraint(body)
        if spec is None:
            return None
        try:
            await self.engine.validate_guided(spec)
        except ValueError as exc:
            raise APIError(str(exc), param=getattr(exc, "param", spec.param),
                           code="invalid_value") from None
        return spec

    def output_constraint(self, body: RequestT) -> GuidedSpec | None:
        """The guided_* / response_format constraint (endpoints add their own)."""
        return guided_spec(body)

    def echo_texts(self, body: RequestT, prompts: list[list[int]]) -> list[str]:
        """Per prompt, the text echoed before its choices (none by default)."""
        return [""] * len(prompts)

    def prompt_logprobs(self, turn: Turn[RequestT],
                        result: ChoiceResult) -> PromptLogprobs | None:
        """vLLM's ``prompt_logprobs`` of a result's prompt when the request asked for
        them, else None (left out of the JSON)."""
        if turn.body.prompt_logprobs is None or result.prompt_logprobs is None:
            return None
        return self.logprobs.prompt(result.prompt_logprobs)

    async def prompts_and_images(self, body: RequestT) -> tuple[list[list[int]], Any]:
        """The prompts and their images (None: text only; chat overrides this)."""
        return self.prompt_ids(body), None

    @abstractmethod
    def prompt_ids(self, body: RequestT) -> list[list[int]]:
        """Token ids of each prompt of the request (truncated as asked)."""
        ...

    def opening_chunks(self, turn: Turn[RequestT], num_choices: int) -> list[BaseModel]:
        """The chunks sent before any generated text (none by default)."""
        return []

    @abstractmethod
    def delta_chunks(self, turn: Turn[RequestT], index: int,
                     output: RequestOutput) -> list[BaseModel]:
        """The chunks one engine delta turns into: text, then the finish reason."""
        ...

    @abstractmethod
    def usage_chunk(self, turn: Turn[RequestT], usage: UsageInfo) -> BaseModel:
        """The last chunk: no choices, only usage."""
        ...

    @abstractmethod
    def response(self, turn: Turn[RequestT], results: list[ChoiceResult],
                 usage: UsageInfo) -> BaseModel:
        """The non-streamed response body."""
        ...
