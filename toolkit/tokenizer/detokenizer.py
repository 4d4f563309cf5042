"""Incremental detokenization that never emits half a UTF-8 character."""

from __future__ import annotations

from toolkit.tokenizer.tokenizer import Tokenizer

NUM_CONTEXT_TOKENS = 5
"""Prompt tokens decoded as context, so the first output token gets its leading space right."""


class IncrementalDetokenizer:
    """Turns one request's tokens into text deltas.

    With a Rust-backed (fast) tokenizer this is ``tokenizers.decoders.DecodeStream``,
    primed with the last prompt tokens: it decodes a sliding window in Rust and holds back
    text that ends inside a multi-byte character (emoji, CJK, byte-fallback pieces).
    Other tokenizers take the same algorithm in Python: each step decodes a short window
    twice, with and without the new tokens, and emits the difference unless it ends in
    U+FFFD.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_token_ids: list[int],
                 skip_special_tokens: bool = True,
                 spaces_between_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.spaces_between_special_tokens = spaces_between_special_tokens
        context = list(prompt_token_ids[-NUM_CONTEXT_TOKENS:])
        self._backend = _rust_backend(tokenizer)
        if self._backend is not None:
            from tokenizers.decoders import DecodeStream

            self._stream = DecodeStream(ids=context, skip_special_tokens=skip_special_tokens)
        self.token_ids = context
        self.prefix_offset = 0
        self.read_offset = len(self.token_ids)

    def step(self, new_token_ids: list[int]) -> str:
        """Add tokens; return the newly completed text (possibly empty)."""
        if self._backend is not None:
            return self._stream.step(self._backend, list(new_token_ids)) or ""
        self.token_ids.extend(new_token_ids)
        prefix = self._decode(self.token_ids[self.prefix_offset:self.read_offset])
        full = self._decode(self.token_ids[self.prefix_offset:])
        if len(full) <= len(prefix) or full.endswith("\ufffd"):
            return ""
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.token_ids)
        return full[len(prefix):]

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(
            token_ids, skip_special_tokens=self.skip_special_tokens,
            spaces_between_special_tokens=self.spaces_between_special_tokens)


def _rust_backend(tokenizer: Tokenizer):
    """The ``tokenizers.Tokenizer`` behind a fast Hugging Face tokenizer, else None."""
    from tokenizers import Tokenizer as RustTokenizer

    backend = getattr(getattr(tokenizer, "hf", None), "backend_tokenizer", None)
    return backend if isinstance(backend, RustTokenizer) else None
