"""What the HTTP layer needs from the engine, as structural types (no engine import here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from toolkit.protocol import RequestOutput, SamplingParams


class TokenizerClient(Protocol):
    """The tokenizer calls the API makes."""

    vocab_size: int

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def apply_chat_template(
        self, messages: list[dict], add_generation_prompt: bool = True
    ) -> list[int]: ...


class EngineClient(Protocol):
    """The engine calls the API makes; ``toolkit.engine.AsyncEngine`` satisfies it."""

    model_name: str
    max_model_len: int
    healthy: bool
    tokenizer: TokenizerClient

    def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[RequestOutput]: ...
