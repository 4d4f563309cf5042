"""OpenAI-compatible response bodies and stream chunks (pydantic v2)."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field, model_serializer

from toolkit.api.openai.logprobs import ChatLogprobs, CompletionLogprobs, PromptLogprobs
from toolkit.api.openai.protocol_tools import ToolCall, ToolCallDelta


def new_id(prefix: str) -> str:
    """A fresh response id such as ``chatcmpl-<uuid hex>``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    """Unix time in seconds, for ``created``."""
    return int(time.time())


def _is_none(value: Any) -> bool:
    """Fields left out of the JSON when unset (prompt_logprobs, which only some requests
    ask for)."""
    return value is None


class UsageInfo(BaseModel):
    """Token counts of one request."""

    prompt_tokens: int = Field(description="Tokens in the prompt(s), each prompt counted once.")
    completion_tokens: int = Field(description="Tokens generated over all choices.")
    total_tokens: int = Field(description="prompt_tokens + completion_tokens.")

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> UsageInfo:
        """Usage with the total filled in."""
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class AssistantMessage(BaseModel):
    """The generated message of a chat choice."""

    role: str = "assistant"
    content: str | None
    """The answer; None when the message only calls tools."""
    reasoning_content: str | None = None
    """The model's reasoning (server.chat.reasoning); left out of the JSON when None."""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    """The calls the message makes; left out of the JSON when there are none (as OpenAI)."""

    @model_serializer(mode="wrap")
    def _drop_empty(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("reasoning_content") is None:
            data.pop("reasoning_content", None)
        if not data.get("tool_calls"):
            data.pop("tool_calls", None)
        return data


class ChatCompletionChoice(BaseModel):
    """One generated chat choice."""

    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    """Body of a non-streamed chat completion."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo
    prompt_logprobs: PromptLogprobs | None = Field(
        None, exclude_if=_is_none,
        description="With the request's prompt_logprobs (vLLM): per prompt token, null for "
        "the first, then token id -> {logprob, rank, decoded_token}; absent otherwise.",
    )


class DeltaMessage(BaseModel):
    """What a chat stream chunk adds to a choice; unset fields are left out of the JSON."""

    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: Any) -> dict[str, Any]:
        return _without_none(handler(self))


def _without_none(value: Any) -> Any:
    """``value`` with None entries removed from every dict in it."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


class ChatCompletionChunkChoice(BaseModel):
    """One choice's delta in a chat stream chunk."""

    index: int
    delta: DeltaMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]
    usage: UsageInfo | None = None


class CompletionChoice(BaseModel):
    """One generated text choice (also the shape of a stream chunk's choice)."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    prompt_logprobs: PromptLogprobs | None = Field(
        None, exclude_if=_is_none,
        description="With the request's prompt_logprobs (vLLM): per prompt token, null for "
        "the first, then token id -> {logprob, rank, decoded_token}; absent otherwise.",
    )


class CompletionResponse(BaseModel):
    """Body of a text completion, and of each chunk of a streamed one."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``, and the body of ``GET /v1/models/{model}`` (vLLM's
    model card)."""

    id: str
    """The served name requests use."""
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "toolkit"
    root: str | None = None
    """The model behind the name (the engine's own model name)."""
    parent: str | None = None
    """The base model of an adapter; None for a base model."""
    max_model_len: int
    deterministic: bool
    """A request's tokens (greedy or seeded) never depend on what else the server runs."""


class ModelList(BaseModel):
    """Body of ``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    """The ``error`` object of an OpenAI error body."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """An OpenAI error body: ``{"error": {...}}``."""

    error: ErrorInfo
