"""OpenAI-compatible request bodies (pydantic v2), with vLLM's and Aphrodite's extras.

Parameters OpenAI defines but this server does not implement are part of the schema so that
a request using them fails with a clear 400 instead of being silently ignored; each request
model lists them in ``UNSUPPORTED`` (rejected when set to a truthy value).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, NonNegativeInt

from toolkit.api.openai.protocol_sampling import SamplingRequest
from toolkit.api.openai.protocol_tools import ToolChoice, ToolDefinition


class ImageURL(BaseModel):
    """Where an image part's image is: a ``data:`` URL, or http(s) where the server
    fetches (server.media.allow_fetch)."""

    url: str = Field(description="data:image/png;base64,... or an http(s) URL.")
    detail: str | None = Field(None, description="OpenAI's detail hint (ignored).")


class ContentPart(BaseModel):
    """One part of a multi-part message content: ``{"type": "text"}``, or
    ``{"type": "image_url"}`` for a model that takes images."""

    type: str = Field(description="The part's kind: text or image_url (input_audio ... "
                      "not yet).")
    text: str | None = Field(None, description="The text of a text part.")
    image_url: ImageURL | None = Field(None, description="The image of an image_url part.")


class ChatMessage(BaseModel):
    """One message of the conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(
        description="Who wrote the message."
    )
    content: str | list[ContentPart] | None = Field(
        None, description="The text, or a list of text parts that are joined with newlines."
    )
    name: str | None = Field(None, description="An optional name for the participant.")
    tool_calls: list[dict[str, Any]] | None = Field(
        None, description="Tool calls of an assistant message."
    )
    tool_call_id: str | None = Field(
        None, description="The call a tool message answers."
    )


class ChatOptions(BaseModel):
    """How the conversation is rendered into a prompt (chat completions and /tokenize)."""

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    add_generation_prompt: bool = Field(
        True, description="Append the assistant turn header of the chat template."
    )
    continue_final_message: bool = Field(
        False, description="Leave the last message open for the model to continue; "
        "exclusive with add_generation_prompt.",
    )
    documents: list[dict[str, str]] | None = Field(
        None, description="Retrieval documents passed to the chat template."
    )
    chat_template: str | None = Field(
        None, description="A Jinja chat template for this request (rendered in a sandbox)."
    )
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="Extra variables for the chat template."
    )
    add_special_tokens: bool = Field(
        False, description="Let the tokenizer add special tokens (BOS) on top of the template."
    )


class ChatCompletionRequest(ChatOptions, SamplingRequest):
    """Body of ``POST /v1/chat/completions``."""

    max_tokens: int | None = Field(
        None, description="Deprecated alias of max_completion_tokens."
    )
    max_completion_tokens: int | None = Field(
        None, description="Most tokens to generate; defaults to the rest of the context."
    )
    logprobs: bool | None = Field(
        None, description="Return the log-probability of each generated token."
    )
    top_logprobs: int | None = Field(
        None, description="Alternatives per token, 0-20 (needs logprobs=true)."
    )
    echo: bool = Field(
        False, description="Prepend the last message's content when its role is the "
        "response role.",
    )
    tools: list[ToolDefinition] | None = Field(
        None, description="Functions the model may call."
    )
    tool_choice: ToolChoice | None = Field(
        None, description="none, auto (default with tools), required, or "
        "{'type': 'function', 'function': {'name': ...}}.",
    )
    parallel_tool_calls: bool | None = Field(
        None, description="Allow more than one tool call (default true)."
    )
    functions: list[dict[str, Any]] | None = Field(None, description="Not supported.")
    function_call: str | dict[str, Any] | None = Field(None, description="Not supported.")
    modalities: list[str] | None = Field(None, description="Only ['text'] is supported.")
    audio: dict[str, Any] | None = Field(None, description="Not supported.")
    prediction: dict[str, Any] | None = Field(None, description="Not supported.")
    reasoning_effort: str | None = Field(None, description="Not supported.")

    UNSUPPORTED: ClassVar[tuple[str, ...]] = (
        *SamplingRequest.UNSUPPORTED,
        "functions",
        "function_call",
        "audio",
        "prediction",
        "reasoning_effort",
    )

    def unsupported_params(self) -> list[str]:
        """Names of the fields set to values this server cannot honour."""
        names = super().unsupported_params()
        if self.modalities not in (None, ["text"]):
            names.append("modalities")
        return names

    @property
    def max_tokens_param(self) -> str:
        """The name of the output-length field the client used."""
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    def requested_max_tokens(self) -> int | None:
        """max_completion_tokens, else max_tokens, else None (use the rest of the context)."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    def num_logprobs(self) -> int | None:
        """Alternatives per token when logprobs are on (0: only the sampled token)."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(SamplingRequest):
    """Body of ``POST /v1/completions``."""

    prompt: str | list[str] | list[NonNegativeInt] | list[list[NonNegativeInt]] = Field(
        description="A string, a list of strings, token ids, or a list of token-id lists."
    )
    max_tokens: int | None = Field(
        16, description="Most tokens to generate; null means the rest of the context."
    )
    logprobs: int | None = Field(
        None, description="Log-probabilities of each token with this many alternatives."
    )
    echo: bool = Field(False, description="Return the prompt before the completion.")
    suffix: str | None = Field(None, description="Not supported (as in vLLM).")
    add_special_tokens: bool = Field(
        True, description="Add the tokenizer's special tokens (BOS) to string prompts."
    )

    UNSUPPORTED: ClassVar[tuple[str, ...]] = (*SamplingRequest.UNSUPPORTED, "suffix")

    @property
    def max_tokens_param(self) -> str:
        """The name of the output-length field."""
        return "max_tokens"

    def requested_max_tokens(self) -> int | None:
        """max_tokens, or None for the rest of the context."""
        return self.max_tokens

    def num_logprobs(self) -> int | None:
        """Alternatives per token, or None when logprobs are off."""
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of prompts, each a string or a list of token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and isinstance(prompt[0], int):
            return [list(prompt)]
        return list(prompt)
