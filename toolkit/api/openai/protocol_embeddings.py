"""``POST /v1/embeddings`` bodies in OpenAI's (and vLLM's) shape."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, NonNegativeInt

POOLING_TYPES = ("last", "mean")
"""server.embedding.pooling values (the engine's pooling types)."""


class EmbeddingRequest(BaseModel):
    """Body of ``POST /v1/embeddings``."""

    model: str | None = Field(None, description="A served model name; defaults to the first.")
    input: str | list[str] | list[NonNegativeInt] | list[list[NonNegativeInt]] = Field(
        description="A string, a list of strings, token ids, or a list of token-id lists."
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: little-endian float32 bytes."
    )
    dimensions: int | None = Field(
        None, description="The vectors' size: only the model's hidden size is accepted."
    )
    user: str | None = Field(None, description="End-user id; accepted and ignored.")
    truncate_prompt_tokens: int | None = Field(
        None, description="Keep only the last k tokens of each input (k >= 1)."
    )
    add_special_tokens: bool = Field(
        True, description="Add the tokenizer's special tokens (BOS) to string inputs."
    )

    def inputs(self) -> list[str | list[int]]:
        """The input as a list of inputs, each a string or a list of token ids."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if value and isinstance(value[0], int):
            return [list(value)]
        return list(value)


class EmbeddingData(BaseModel):
    """One input's vector."""

    index: int
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    """The vector, or its float32 bytes in base64."""


class EmbeddingUsage(BaseModel):
    """Token counts of an embedding request."""

    prompt_tokens: int = Field(description="Tokens in all inputs.")
    total_tokens: int = Field(description="Equal to prompt_tokens.")


class EmbeddingResponse(BaseModel):
    """Body of a ``POST /v1/embeddings`` answer."""

    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[EmbeddingData]
    usage: EmbeddingUsage
