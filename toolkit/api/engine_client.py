"""What the HTTP layer needs from the engine, as structural types (no engine import here)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol

from toolkit.protocol import GuidedSpec, RequestOutput, SamplingParams
from toolkit.tokenizer.chat_template import ChatRender


class TokenizerClient(Protocol):
    """The tokenizer calls the API makes."""

    vocab_size: int
    chat_template: str | None
    eos_token_ids: tuple[int, ...]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str: ...

    def token_strings(self, token_ids: list[int]) -> list[str]: ...

    def convert_ids_to_tokens(self, token_ids: list[int]) -> list[str]: ...

    def render_chat(self, messages: list[dict], options: ChatRender | None = None,
                    chat_template: str | None = None) -> str: ...


class EngineClient(Protocol):
    """The engine calls the API makes; ``toolkit.engine.AsyncEngine`` satisfies it."""

    model_name: str
    max_model_len: int
    deterministic: bool
    healthy: bool
    tokenizer: TokenizerClient
    supports_priority: bool
    metrics: Any

    def stats(self) -> dict: ...

    def abort(self, request_id: str) -> None:
        """Stop a request; its stream, if still read, ends with reason "abort"."""
        ...

    async def validate_guided(self, spec: GuidedSpec) -> None:
        """Compile ``spec`` off the event loop; a ValueError with ``param`` when invalid."""
        ...

    def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
        priority: int = 0, multimodal: Any = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        """The request's deltas, produced only while iterated (``multimodal``: the
        prompt's images, a toolkit.protocol MultiModalInput; passed only when there are
        some, so an engine without images need not take it). ``num_output_tokens`` is
        cumulative; the last delta carries ``finish_reason``; one with ``error`` set is a
        failure inside the engine (the API answers 500). Raises
        ``EngineOverloadedError`` (503 with Retry-After) when the queue is full, ValueError
        for a bad request. Closing the generator (``aclose``) before the end aborts the
        request."""
        ...

    async def embed(self, prompts: list[list[int]], pooling: str = "last",
                    normalize: bool = True) -> list[list[float]]:
        """One pooled vector per prompt; ValueError for a bad prompt, RuntimeError when
        the engine failed."""
        ...
