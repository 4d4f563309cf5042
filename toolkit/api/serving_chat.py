"""``POST /v1/chat/completions``."""

from __future__ import annotations

from toolkit.api.generation import ChoiceResult
from toolkit.api.prompts import chat_prompt_ids
from toolkit.api.protocol import ChatCompletionRequest
from toolkit.api.responses import (
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionResponse,
    DeltaMessage,
    UsageInfo,
    now,
)
from toolkit.api.serving_base import OpenAIServing
from toolkit.protocol import RequestOutput


class ChatServing(OpenAIServing[ChatCompletionRequest]):
    """Chat completions: the conversation goes through the model's chat template."""

    request_model = ChatCompletionRequest
    id_prefix = "chatcmpl"
    prompt_param = "messages"

    def prompt_ids(self, body: ChatCompletionRequest) -> list[list[int]]:
        """The rendered conversation: one prompt."""
        return [chat_prompt_ids(self.engine.tokenizer, body)]

    def response(
        self,
        body: ChatCompletionRequest,
        response_id: str,
        results: list[ChoiceResult],
        usage: UsageInfo,
    ) -> ChatCompletionResponse:
        """One assistant message per choice."""
        choices = [
            ChatCompletionChoice(
                index=result.index,
                message=AssistantMessage(content=result.text),
                finish_reason=result.finish_reason,
            )
            for result in results
        ]
        return ChatCompletionResponse(
            id=response_id, created=now(), model=self.engine.model_name,
            choices=choices, usage=usage,
        )

    def opening_chunks(
        self, response_id: str, created: int, num_choices: int
    ) -> list[ChatCompletionChunk]:
        """Each choice first announces the assistant role with empty content."""
        opening = DeltaMessage(role="assistant", content="")
        return [
            self._chunk(response_id, created, [ChatCompletionChunkChoice(index=i, delta=opening)])
            for i in range(num_choices)
        ]

    def delta_chunks(
        self, response_id: str, created: int, index: int, output: RequestOutput
    ) -> list[ChatCompletionChunk]:
        """A content delta (if any text came), then a finish chunk when the choice ends."""
        choices = []
        if output.new_text:
            choices.append(
                ChatCompletionChunkChoice(index=index, delta=DeltaMessage(content=output.new_text))
            )
        if output.finished:
            choices.append(
                ChatCompletionChunkChoice(
                    index=index, delta=DeltaMessage(), finish_reason=output.finish_reason
                )
            )
        return [self._chunk(response_id, created, [choice]) for choice in choices]

    def usage_chunk(self, response_id: str, created: int, usage: UsageInfo) -> ChatCompletionChunk:
        """The usage-only chunk of ``stream_options.include_usage``."""
        return self._chunk(response_id, created, [], usage)

    def _chunk(
        self,
        response_id: str,
        created: int,
        choices: list[ChatCompletionChunkChoice],
        usage: UsageInfo | None = None,
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=response_id, created=created, model=self.engine.model_name,
            choices=choices, usage=usage,
        )
