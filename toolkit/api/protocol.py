"""OpenAI-compatible request bodies (pydantic v2).

Parameters OpenAI defines but this server does not implement yet are part of the schema so
that a request using them fails with a clear 400 instead of being silently ignored; each
request model lists them in ``UNSUPPORTED`` (rejected when set to a non-default value).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, NonNegativeInt


class StreamOptions(BaseModel):
    """Options for a streamed response."""

    include_usage: bool = Field(
        False, description="Send a last chunk with empty choices and the request's token usage."
    )


class ResponseFormat(BaseModel):
    """Output format; only ``text`` is supported yet."""

    type: Literal["text", "json_object", "json_schema"] = Field(
        "text", description="text, json_object or json_schema."
    )
    json_schema: dict[str, Any] | None = Field(None, description="The schema for json_schema.")


class ContentPart(BaseModel):
    """One part of a multi-part message content; only ``{"type": "text"}`` is supported yet."""

    type: str = Field(description="The part's kind: text (image_url, input_audio ... not yet).")
    text: str | None = Field(None, description="The text of a text part.")


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
        None, description="Tool calls of an assistant message (not supported yet)."
    )


class SamplingRequest(BaseModel):
    """Fields shared by chat and text completions."""

    model: str | None = Field(None, description="The served model id; defaults to it.")
    temperature: float | None = Field(
        None, description="Sampling temperature; 0 is greedy. Default 1."
    )
    top_p: float | None = Field(None, description="Nucleus sampling probability mass. Default 1.")
    n: int = Field(1, ge=1, description="How many choices to generate for each prompt.")
    stream: bool = Field(False, description="Stream deltas as server-sent events.")
    stream_options: StreamOptions | None = Field(
        None, description="Options for streaming; only allowed with stream=true."
    )
    stop: str | list[str] | None = Field(
        None, description="Strings that end generation; they are not returned."
    )
    seed: int | None = Field(
        None, description="Makes sampling reproducible; choice i uses seed + i."
    )
    user: str | None = Field(None, description="End-user id; accepted and ignored.")
    presence_penalty: float | None = Field(None, description="Not supported yet (must be 0).")
    frequency_penalty: float | None = Field(None, description="Not supported yet (must be 0).")
    logit_bias: dict[str, float] | None = Field(None, description="Not supported yet.")
    top_k: int | None = Field(None, description="Keep the k most likely tokens; -1 keeps all.")
    min_p: float | None = Field(
        None, description="Drop tokens below min_p times the top token's probability."
    )
    repetition_penalty: float | None = Field(None, description="Not supported yet (must be 1).")
    stop_token_ids: list[NonNegativeInt] | None = Field(
        None, description="Token ids that end generation, besides the model's EOS ids."
    )
    ignore_eos: bool = Field(False, description="Keep generating past EOS (benchmarks).")

    UNSUPPORTED: ClassVar[tuple[str, ...]] = (
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
    )
    """Fields rejected when truthy (non-empty, non-zero, true)."""

    def unsupported_params(self) -> list[str]:
        """Names of the fields set to values this server cannot honour yet."""
        names = [name for name in self.UNSUPPORTED if getattr(self, name)]
        if self.repetition_penalty not in (None, 1.0):
            names.append("repetition_penalty")
        return names

    @property
    def include_usage(self) -> bool:
        """True when a streamed response must end with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def stop_strings(self) -> tuple[str, ...]:
        """``stop`` as a tuple of strings."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(SamplingRequest):
    """Body of ``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    max_tokens: int | None = Field(
        None, description="Deprecated alias of max_completion_tokens."
    )
    max_completion_tokens: int | None = Field(
        None, description="Most tokens to generate; defaults to the rest of the context."
    )
    add_generation_prompt: bool = Field(
        True, description="Append the assistant turn header of the chat template."
    )
    logprobs: bool | None = Field(None, description="Not supported yet.")
    top_logprobs: int | None = Field(None, description="Not supported yet.")
    tools: list[dict[str, Any]] | None = Field(None, description="Not supported yet.")
    tool_choice: str | dict[str, Any] | None = Field(
        None, description="Only 'none' is supported yet."
    )
    parallel_tool_calls: bool | None = Field(None, description="Ignored without tools.")
    functions: list[dict[str, Any]] | None = Field(None, description="Not supported yet.")
    function_call: str | dict[str, Any] | None = Field(None, description="Not supported yet.")
    response_format: ResponseFormat | None = Field(
        None, description="Only {'type': 'text'} is supported yet."
    )
    modalities: list[str] | None = Field(None, description="Only ['text'] is supported.")
    audio: dict[str, Any] | None = Field(None, description="Not supported yet.")
    prediction: dict[str, Any] | None = Field(None, description="Not supported yet.")
    reasoning_effort: str | None = Field(None, description="Not supported yet.")

    UNSUPPORTED: ClassVar[tuple[str, ...]] = (
        *SamplingRequest.UNSUPPORTED,
        "logprobs",
        "top_logprobs",
        "tools",
        "functions",
        "function_call",
        "audio",
        "prediction",
        "reasoning_effort",
    )

    def unsupported_params(self) -> list[str]:
        """Names of the fields set to values this server cannot honour yet."""
        names = super().unsupported_params()
        if self.tool_choice not in (None, "none"):
            names.append("tool_choice")
        if self.response_format is not None and self.response_format.type != "text":
            names.append("response_format")
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


class CompletionRequest(SamplingRequest):
    """Body of ``POST /v1/completions``."""

    prompt: str | list[str] | list[NonNegativeInt] | list[list[NonNegativeInt]] = Field(
        description="A string, a list of strings, token ids, or a list of token-id lists."
    )
    max_tokens: int | None = Field(
        16, description="Most tokens to generate; null means the rest of the context."
    )
    logprobs: int | None = Field(None, description="Not supported yet.")
    echo: bool = Field(False, description="Not supported yet.")
    suffix: str | None = Field(None, description="Not supported yet.")
    best_of: int | None = Field(None, description="Not supported yet (must equal n).")

    UNSUPPORTED: ClassVar[tuple[str, ...]] = (
        *SamplingRequest.UNSUPPORTED,
        "echo",
        "suffix",
    )

    def unsupported_params(self) -> list[str]:
        """Names of the fields set to values this server cannot honour yet."""
        names = super().unsupported_params()
        if self.logprobs is not None:
            names.append("logprobs")
        if self.best_of not in (None, self.n):
            names.append("best_of")
        return names

    @property
    def max_tokens_param(self) -> str:
        """The name of the output-length field."""
        return "max_tokens"

    def requested_max_tokens(self) -> int | None:
        """max_tokens, or None for the rest of the context."""
        return self.max_tokens

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of prompts, each a string or a list of token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and isinstance(prompt[0], int):
            return [list(prompt)]
        return list(prompt)
