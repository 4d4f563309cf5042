"""``POST /v1/chat/completions``."""

from __future__ import annotations

import asyncio

from toolkit.api.http.errors import APIError
from toolkit.api.openai.chat_output import ChoiceStream, finish_reason, split_message
from toolkit.api.openai.generation import ChoiceResult
from toolkit.api.openai.guided import guided_spec
from toolkit.api.openai.images import ImagePart, image_parts, load_images
from toolkit.api.openai.prompts import (
    chat_prompt_ids,
    chat_prompt_text,
    message_text,
    truncate_prompt,
)
from toolkit.api.openai.protocol import ChatCompletionRequest
from toolkit.api.openai.responses import (
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionResponse,
    DeltaMessage,
    UsageInfo,
)
from toolkit.api.openai.serving_base import OpenAIServing, Turn
from toolkit.api.openai.tools import chat_constraint, tool_mode
from toolkit.protocol import GuidedSpec, RequestOutput
from toolkit.protocol.multimodal import MultiModalInput

ChatTurn = Turn[ChatCompletionRequest]


def _check_image_options(body: ChatCompletionRequest, parts: list[ImagePart]) -> None:
    """Options that cannot keep a prompt's images in place are a 400."""
    for name in ("use_beam_search", "truncate_prompt_tokens"):
        if getattr(body, name, None) not in (None, False):
            raise APIError(f"{name} cannot be combined with image_url content parts",
                           param=name, code="invalid_value")


class ChatServing(OpenAIServing[ChatCompletionRequest]):
    """Chat completions: the conversation goes through a sandboxed chat template."""

    request_model = ChatCompletionRequest
    id_prefix = "chatcmpl"
    prompt_param = "messages"

    def prompt_ids(self, body: ChatCompletionRequest) -> list[list[int]]:
        """The rendered conversation: one prompt."""
        ids = chat_prompt_ids(self.engine.tokenizer, body, self.ctx.chat_template,
                              self.ctx.tool_chat_template)
        return [truncate_prompt(ids, body.truncate_prompt_tokens)]

    async def prompts_and_images(self, body: ChatCompletionRequest
                                 ) -> tuple[list[list[int]], MultiModalInput | None]:
        """With image_url parts: the images loaded and preprocessed, each image
        placeholder of the rendered prompt expanded into the model's image tokens, and
        the images bound to those tokens. A model that takes no images is a 400."""
        parts = image_parts(body.messages)
        if not parts:
            return self.prompt_ids(body), None
        images = getattr(self.engine.tokenizer, "images", None)
        if images is None:
            raise APIError(f"The model `{self.ctx.model_name}` does not accept images "
                           "(image_url content parts)", param=parts[0].param,
                           code="images_not_supported")
        _check_image_options(body, parts)
        loaded = await load_images(parts, self.ctx.media)
        text = chat_prompt_text(self.engine.tokenizer, body, self.ctx.chat_template,
                                self.ctx.tool_chat_template)
        try:
            text, inputs = await asyncio.to_thread(images.expand, text, loaded)
            ids = self.engine.tokenizer.encode(text, add_special_tokens=body.add_special_tokens)
            multimodal = images.bind(inputs, ids)
        except ValueError as exc:
            raise APIError(f"The images do not fit the prompt: {exc}", param="messages",
                           code="invalid_messages") from None
        return [ids], multimodal

    def output_constraint(self, body: ChatCompletionRequest) -> GuidedSpec | None:
        """guided_* / response_format, the grammar of a named or required tool choice, or
        (auto with response_format) calls or the answer format: ``chat_constraint``."""
        return chat_constraint(body, tool_mode(body), guided_spec(body),
                               self.ctx.tool_parser.name)

    def echo_texts(self, body: ChatCompletionRequest, prompts: list[list[int]]) -> list[str]:
        """With echo, the last message's text when it has the response role."""
        last = body.messages[-1]
        if body.echo and last.role == self.ctx.response_role:
            return [message_text(len(body.messages) - 1, last)]
        return [""]

    def response(self, turn: ChatTurn, results: list[ChoiceResult],
                 usage: UsageInfo) -> ChatCompletionResponse:
        """One message per choice (reasoning and tool calls split out), with logprobs
        when asked for."""
        mode = tool_mode(turn.body)
        choices = []
        for result in results:
            parts = split_message(result.text, mode, self.ctx.tool_parser, self.ctx.reasoning)
            content = parts.content
            if content is not None or not parts.calls:
                content = turn.echo_of(result.index) + (content or "")
            message = AssistantMessage(role=self.ctx.response_role, content=content,
                                       reasoning_content=parts.reasoning,
                                       tool_calls=parts.calls)
            choices.append(ChatCompletionChoice(
                index=result.index, message=message,
                logprobs=(self.logprobs.chat(result.logprobs)
                          if turn.body.num_logprobs() is not None else None),
                finish_reason=finish_reason(result.finish_reason, bool(parts.calls)),
            ))
        return ChatCompletionResponse(
            id=turn.response_id, created=turn.created,
            model=self.ctx.response_model(turn.body.model),
            choices=choices, usage=usage,
            prompt_logprobs=self.prompt_logprobs(turn, results[0]) if results else None,
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
        """Content, reasoning or tool-call deltas (echo first), then a finish chunk when
        the choice ends."""
        stream = turn.streams.get(index)
        if stream is None:
            stream = turn.streams[index] = ChoiceStream(
                tool_mode(turn.body), self.ctx.tool_parser, self.ctx.reasoning)
        echo = "" if index in turn.started else turn.echo_of(index)
        deltas = stream.feed(output.new_text, output.finished)
        if echo:
            deltas.insert(0, DeltaMessage(content=echo))
        logprobs = self.logprobs.chat(output.logprobs) if output.logprobs else None
        if logprobs and not deltas:
            deltas.append(DeltaMessage(content=""))
        choices = [ChatCompletionChunkChoice(index=index, delta=delta,
                                             logprobs=logprobs if i == 0 else None)
                   for i, delta in enumerate(deltas)]
        if output.finished:
            reason = finish_reason(output.finish_reason, stream.num_calls > 0)
            choices.append(
                ChatCompletionChunkChoice(index=index, delta=DeltaMessage(), finish_reason=reason)
            )
        return [self._chunk(turn, [choice]) for choice in choices]

    def usage_chunk(self, turn: ChatTurn, usage: UsageInfo) -> ChatCompletionChunk:
        """The usage-only chunk of ``stream_options.include_usage``."""
        return self._chunk(turn, [], usage)

    def _chunk(self, turn: ChatTurn, choices: list[ChatCompletionChunkChoice],
               usage: UsageInfo | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=turn.response_id, created=turn.created,
            model=self.ctx.response_model(turn.body.model),
            choices=choices, usage=usage,
        )
