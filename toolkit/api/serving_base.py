"""The request flow shared by chat and text completions.

body -> checks -> prompt ids -> one ``Job`` per (prompt, choice) -> the engine ->
a JSON response, or a server-sent event stream.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from blacksheep import Request, Response
from pydantic import BaseModel

from toolkit.api.body import parse_body
from toolkit.api.disconnect import unless_disconnected
from toolkit.api.engine_client import EngineClient
from toolkit.api.errors import APIError
from toolkit.api.generation import ChoiceResult, Job, collect, merge_outputs, prefetched
from toolkit.api.protocol import SamplingRequest
from toolkit.api.render import json_response, sse_response
from toolkit.api.responses import UsageInfo, new_id, now
from toolkit.api.sampling import (
    build_sampling_params,
    check_supported,
    choice_params,
    resolve_max_tokens,
)
from toolkit.protocol import RequestOutput

RequestT = TypeVar("RequestT", bound=SamplingRequest)


def check_model(engine: EngineClient, model: str | None) -> None:
    """404 unless ``model`` is the served model (or omitted)."""
    if model is not None and model != engine.model_name:
        raise APIError(
            f"The model `{model}` does not exist.",
            status=404,
            param="model",
            code="model_not_found",
        )


def check_healthy(engine: EngineClient) -> None:
    """503 when the engine loop is no longer running."""
    if not engine.healthy:
        raise APIError(
            "The engine is not running; the server cannot generate.",
            status=503,
            code="engine_unavailable",
        )


class OpenAIServing(ABC, Generic[RequestT]):
    """One generation endpoint; subclasses say how to build prompts and responses."""

    request_model: type[RequestT]
    id_prefix: str
    prompt_param: str

    def __init__(self, engine: EngineClient) -> None:
        self.engine = engine

    async def handle(self, request: Request) -> Response:
        """Serve one HTTP request end to end."""
        body = await parse_body(request, self.request_model)
        check_model(self.engine, body.model)
        check_supported(body)
        check_healthy(self.engine)
        prompts = self.prompt_ids(body)
        response_id = new_id(self.id_prefix)
        jobs = self.jobs(body, response_id, prompts)
        num_prompt_tokens = sum(len(ids) for ids in prompts)
        if body.stream:
            first = prefetched(merge_outputs(self.engine, jobs))
            stream = await unless_disconnected(request, first)
            events = self.events(body, response_id, stream, num_prompt_tokens, len(jobs))
            return sse_response(request, events)
        results = await unless_disconnected(request, collect(self.engine, jobs))
        usage = UsageInfo.of(num_prompt_tokens, sum(r.num_output_tokens for r in results))
        return json_response(self.response(body, response_id, results, usage))

    def jobs(self, body: RequestT, response_id: str, prompts: list[list[int]]) -> list[Job]:
        """One job per (prompt, choice); choice index = prompt * n + choice."""
        jobs = []
        for p, prompt in enumerate(prompts):
            max_tokens = resolve_max_tokens(
                body, len(prompt), self.engine.max_model_len, self.prompt_param
            )
            params = build_sampling_params(body, max_tokens)
            for i, choice in enumerate(choice_params(params, body.n)):
                index = p * body.n + i
                jobs.append(Job(index, f"{response_id}-{index}", prompt, choice))
        return jobs

    async def events(
        self,
        body: RequestT,
        response_id: str,
        stream: AsyncIterator[tuple[int, RequestOutput]],
        num_prompt_tokens: int,
        num_choices: int,
    ) -> AsyncIterator[str]:
        """The JSON of every stream chunk, ending with the usage chunk when asked for."""
        created = now()
        for chunk in self.opening_chunks(response_id, created, num_choices):
            yield chunk.model_dump_json()
        output_tokens: dict[int, int] = {}
        try:
            async for index, output in stream:
                output_tokens[index] = output.num_output_tokens
                for chunk in self.delta_chunks(response_id, created, index, output):
                    yield chunk.model_dump_json()
        finally:
            await stream.aclose()
        if body.include_usage:
            usage = UsageInfo.of(num_prompt_tokens, sum(output_tokens.values()))
            yield self.usage_chunk(response_id, created, usage).model_dump_json()

    @abstractmethod
    def prompt_ids(self, body: RequestT) -> list[list[int]]:
        """Token ids of each prompt of the request."""
        ...

    def opening_chunks(
        self, response_id: str, created: int, num_choices: int
    ) -> list[BaseModel]:
        """The chunks sent before any generated text (none by default)."""
        return []

    @abstractmethod
    def delta_chunks(
        self, response_id: str, created: int, index: int, output: RequestOutput
    ) -> list[BaseModel]:
        """The chunks one engine delta turns into: text, then the finish reason."""
        ...

    @abstractmethod
    def usage_chunk(self, response_id: str, created: int, usage: UsageInfo) -> BaseModel:
        """The last chunk: no choices, only usage."""
        ...

    @abstractmethod
    def response(
        self, body: RequestT, response_id: str, results: list[ChoiceResult], usage: UsageInfo
    ) -> BaseModel:
        """The non-streamed response body."""
        ...
