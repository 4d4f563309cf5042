"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` / ``DELETE
/v1/responses/{id}`` and ``POST /v1/responses/{id}/cancel``.

A request is translated into the chat completions request it stands for
(``response_input``) and served by the chat path: its chat template, sampling
parameters, guided grammar, tool parser and reasoning split. The chat path's message (or
its delta messages, when streaming) are then translated into output items and typed
events (``response_output``). Finished responses are kept in a bounded in-memory store
unless ``store`` is false; ``previous_response_id`` continues a stored conversation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from blacksheep import Request, Response
from blacksheep.server.sse import ServerSentEventsResponse, TextServerSentEvent

from toolkit.api.context import ServingContext
from toolkit.api.http.body import parse_body
from toolkit.api.http.deadline import Deadline
from toolkit.api.http.disconnect import client_gone, unless_disconnected
from toolkit.api.http.errors import APIError, unsupported
from toolkit.api.http.render import json_response
from toolkit.api.http.request_log import log_request
from toolkit.api.openai.generation import (
    ChoiceResult,
    Job,
    collect,
    merge_outputs,
    prefetched,
)
from toolkit.api.openai.protocol import ChatCompletionRequest, ChatMessage
from toolkit.api.openai.protocol_responses import ResponsesRequest, TextConfig
from toolkit.api.openai.response_input import (
    chat_request,
    input_messages,
    responses_params,
)
from toolkit.api.openai.response_objects import (
    DeletedResponse,
    ResponseObject,
    ResponseUsage,
    StreamEvent,
    item_id,
)
from toolkit.api.openai.response_output import (
    ResponseStream,
    conversation_messages,
    finish,
    is_incomplete,
    output_items,
)
from toolkit.api.openai.response_store import ResponseStore, StoredResponse
from toolkit.api.openai.responses import UsageInfo
from toolkit.api.openai.serving_base import (
    Turn,
    check_healthy,
    check_model,
    check_prompts,
)
from toolkit.api.openai.serving_chat import ChatServing
from toolkit.api.openai.validation import check_request
from toolkit.protocol import RequestOutput

if TYPE_CHECKING:
    from toolkit.config.schema import ChatConfig

Handler = Callable[[Request], Awaitable[Response]]
ResponseTurn = Turn[ChatCompletionRequest]


class ResponsesServing:
    """The Responses routes, over the chat completions path and a response store."""

    def __init__(self, ctx: ServingContext, store: ResponseStore | None = None) -> None:
        self.ctx = ctx
        self.chat = ChatServing(ctx)
        """Renders, constrains, samples and parses exactly as chat completions do."""
        self.store = store if store is not None else ResponseStore()

    @classmethod
    def from_config(cls, ctx: ServingContext, config: ChatConfig) -> ResponsesServing:
        """The routes with the store bounded as ``server.chat`` says."""
        return cls(ctx, ResponseStore(config.responses_max_stored, config.responses_ttl_s))

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of every Responses route."""
        return [
            ("POST", "/v1/responses", self.create),
            ("GET", "/v1/responses/{response_id}", self.retrieve),
            ("DELETE", "/v1/responses/{response_id}", self.delete),
            ("POST", "/v1/responses/{response_id}/cancel", self.cancel),
        ]

    async def create(self, request: Request) -> Response:
        """Generate a response: a Response object, or its events when streamed."""
        deadline = Deadline.after(self.ctx.request_timeout)
        body = await parse_body(request, ResponsesRequest)
        check_model(self.ctx, body.model)
        names = body.unsupported_params()
        if names:
            raise unsupported(names[0])
        conversation = [*self._history(body.previous_response_id),
                        *input_messages(body.items())]
        with responses_params():
            turn, jobs = await self._prepare(body, conversation)
        log_request(self.ctx, turn.response_id, turn.prompts, jobs[0].params)
        response = self._in_progress(body, turn)
        if body.stream:
            first = prefetched(deadline.stream(merge_outputs(self.ctx.engine, jobs)))
            stream = await unless_disconnected(request, first)
            return _sse(request, self._events(body, turn, response, stream, conversation))
        work = collect(self.ctx.engine, jobs)
        results = await unless_disconnected(request, deadline.run(work))
        final = self._complete(turn, response, results)
        self._keep(body, final, conversation)
        return json_response(final)

    async def retrieve(self, request: Request) -> Response:
        """A stored response; 404 when unknown, expired or not stored."""
        return json_response(self._stored(request).response)

    async def delete(self, request: Request) -> Response:
        """Forget a stored response; 404 when unknown."""
        response = self._stored(request).response
        self.store.delete(response.id)
        return json_response(DeletedResponse(id=response.id))

    async def cancel(self, request: Request) -> Response:
        """Only background responses can be cancelled, and this server runs none: a stored
        response is a 400 (it has finished), an unknown one a 404."""
        response = self._stored(request).response
        raise APIError(f"Response '{response.id}' has already finished: only background "
                       "responses can be cancelled", param="response_id",
                       code="invalid_request")

    async def _prepare(self, body: ResponsesRequest,
                       conversation: list[ChatMessage]) -> tuple[ResponseTurn, list[Job]]:
        """The chat request's checks, prompt, output constraint and engine jobs."""
        chat_body = chat_request(body, conversation)
        check_request(chat_body, self.ctx)
        check_healthy(self.ctx)
        prompts = self.chat.prompt_ids(chat_body)
        check_prompts(prompts, "input")
        turn = Turn(chat_body, item_id("resp"), prompts, [""],
                    guided=await self.chat.guided_spec(chat_body))
        return turn, self.chat.jobs(turn)

    async def _events(self, body: ResponsesRequest, turn: ResponseTurn,
                      response: ResponseObject,
                      stream: AsyncIterator[tuple[int, RequestOutput]],
                      conversation: list[ChatMessage]) -> AsyncIterator[StreamEvent]:
        """The typed events: opening, one or more per chat delta, closing (or error).
        Leaving early (the client went away) closes ``stream``, aborting the generation."""
        writer = ResponseStream(response)
        output_tokens, reason = 0, None
        try:
            for event in writer.opening():
                yield event
            async for index, output in stream:
                output_tokens = output.num_output_tokens
                for chunk in self.chat.delta_chunks(turn, index, output):
                    for choice in chunk.choices:
                        reason = choice.finish_reason or reason
                        for event in writer.feed(choice.delta):
                            yield event
                turn.started.add(index)
        except APIError as exc:
            yield writer.error(exc)
            return
        finally:
            await stream.aclose()
        usage = ResponseUsage.of(len(turn.prompts[0]), output_tokens)
        for event in writer.close(usage, is_incomplete(reason)):
            yield event
        self._keep(body, writer.response, conversation)

    def _complete(self, turn: ResponseTurn, response: ResponseObject,
                  results: list[ChoiceResult]) -> ResponseObject:
        """The finished response: the chat path's message as output items."""
        usage = UsageInfo.of(len(turn.prompts[0]), results[0].num_output_tokens)
        choice = self.chat.response(turn, results, usage).choices[0]
        incomplete = is_incomplete(choice.finish_reason)
        return finish(response, output_items(choice.message, incomplete),
                      ResponseUsage.of(usage.prompt_tokens, usage.completion_tokens),
                      incomplete)

    def _in_progress(self, body: ResponsesRequest, turn: ResponseTurn) -> ResponseObject:
        """The response as created: the request's options, no output yet."""
        return ResponseObject(
            id=turn.response_id, created_at=turn.created, status="in_progress",
            model=self.ctx.response_model(body.model), instructions=body.instructions,
            max_output_tokens=body.max_output_tokens, temperature=body.temperature,
            top_p=body.top_p, previous_response_id=body.previous_response_id,
            store=body.store, parallel_tool_calls=body.parallel_tool_calls,
            tool_choice=body.tool_choice or "auto", tools=body.tools or [],
            text=body.text or TextConfig(), reasoning=body.reasoning, metadata=body.metadata,
            user=body.user,
        )

    def _history(self, previous_response_id: str | None) -> list[ChatMessage]:
        """The conversation of the previous response; 404 when it is not stored."""
        if previous_response_id is None:
            return []
        entry = self.store.get(previous_response_id)
        if entry is None:
            raise APIError(f"Previous response with id '{previous_response_id}' not found.",
                           status=404, param="previous_response_id",
                           code="previous_response_not_found")
        return list(entry.messages)

    def _keep(self, body: ResponsesRequest, response: ResponseObject,
              conversation: list[ChatMessage]) -> None:
        """Store a finished response with its conversation, unless store is false."""
        if body.store:
            self.store.put(response, [*conversation, *conversation_messages(response.output)])

    def _stored(self, request: Request) -> StoredResponse:
        """The stored entry the path's response_id names; a 404 when there is none."""
        response_id = request.route_values.get("response_id", "")
        entry = self.store.get(response_id)
        if entry is None:
            raise APIError(f"Response with id '{response_id}' not found.", status=404,
                           param="response_id", code="not_found")
        return entry


def _sse(request: Request, events: AsyncIterator[StreamEvent]) -> Response:
    """``event: <type>`` / ``data: <json>`` per event (no ``[DONE]``: the Responses
    stream ends with its last event). Stops, aborting the generation, when the client
    goes away."""

    async def provider() -> AsyncIterator[TextServerSentEvent]:
        try:
            async for event in events:
                if await client_gone(request):
                    return
                yield TextServerSentEvent(event.model_dump_json(), event=event.type)
        finally:
            await events.aclose()

    return ServerSentEventsResponse(provider)
