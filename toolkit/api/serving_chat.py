"""``POST /v1/chat/completions``."""

from __future__ import annotations

from toolkit.api.generation import ChoiceResult
from toolkit.api.prompts import chat_prompt_ids, message_text, truncate_prompt
from toolkit.api.protocol import ChatCompletionRequest
from toolkit.api.responses import (
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionResponse,
    DeltaMessage,
    UsageInfo,
)
from toolkit.api.serving_base import OpenAIServing, Turn
from toolkit.protocol import RequestOutput

ChatTurn = Turn[ChatCompletionRequest]


class ChatServing(OpenAIServing[ChatCompletionRequest]):
    """Chat completions: the conversation goes through a sandboxed chat template."""

    request_model = ChatCompletionRequest
    id_prefix = "chatcmpl"
    prompt_param = "messages"

    def prompt_ids(self, body: ChatCompletionRequest) -> list[list[int]]:
        """The rendered conversation: one prompt."""
        ids = chat_prompt_ids(self.engine.tokenizer, body, self.ctx.chat_template)
        return [truncate_prompt(ids, body.truncate_prompt_tokens)]

    def echo_texts(self, body: ChatCompletionRequest, prompts: list[list[int]]) -> list[str]:
        """With echo, the last message's text when it has the response role."""
        last = body.messages[-1]
        if body.echo and last.role == self.ctx.response_role:
            return [message_text(len(body.messages) - 1, last)]
        return [""]

    def response(self, turn: ChatTurn, results: list[ChoiceResult],
                 usage: UsageInfo) -> ChatCompletionResponse:
        """One message per choice, with logprobs when asked for."""
        choices = [
            ChatCompletionChoice(
                index=result.index,
                message=AssistantMessage(role=self.ctx.response_role,
                                         content=turn.echo_of(result.index) + result.text),
                logprobs=(self.logprobs.chat(result.logprobs)
                          if turn.body.num_logprobs() is not None else None),
                finish_reason=result.finish_reason,
            )
            for result in results
        ]
        return ChatCompletionResponse(
            id=turn.response_id, created=turn.created, model=self.ctx.model_name,
            choices=choices, usage=usage,
        )

    def opening_chunks(self, turn: ChatTurn, num_choices: int) -> list[ChatCompletionChunk]:
        """Each choice first announces the role with empty content."""
        opening = DeltaMessage(role=self.ctx.response_role, content="")
        return [
            self._chunk(turn, [ChatCompletionChunkChoice(index=i, delta=opening)])
            for i in range(num_choices)
        ]

    def delta_chunks(self, turn: ChatTurn, index: int,
                     output: RequestOutput) -> list[ChatCompletionChunk]:
        """A content delta (echo first), then a finish chunk when the choice ends."""
        choices = []
        text = output.new_text if index in turn.started else turn.echo_of(index) + output.new_text
        logprobs = (self.logprobs.chat(output.logprobs)
                    if output.logprobs else None)
        if text or logprobs:
            choices.append(ChatCompletionChunkChoice(
                index=index, delta=DeltaMessage(content=text), logprobs=logprobs))
        if output.finished:
            choices.append(
                ChatCompletionChunkChoice(
                    index=index, delta=DeltaMessage(), finish_reason=output.finish_reason
                )
            )
        return [self._chunk(turn, [choice]) for choice in choices]

    def usage_chunk(self, turn: ChatTurn, usage: UsageInfo) -> ChatCompletionChunk:
        """The usage-only chunk of ``stream_options.include_usage``."""
        return self._chunk(turn, [], usage)

    def _chunk(self, turn: ChatTurn, choices: list[ChatCompletionChunkChoice],
               usage: UsageInfo | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=turn.response_id, created=turn.created, model=self.ctx.model_name,
            choices=choices, usage=usage,
        )
