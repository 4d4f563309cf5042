"""Token logprobs -> OpenAI's two response shapes (chat ``content[]``, completions' lists)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from toolkit.api.engine_client import TokenizerClient
from toolkit.protocol import TokenLogprobs

MIN_LOGPROB = -9999.0
"""-inf is not JSON; impossible tokens are reported with this logprob (as vLLM does)."""


class TopLogprob(BaseModel):
    """One candidate token of a chat logprobs entry."""

    token: str = Field(description="The token's text (or token_id:<id>).")
    logprob: float = Field(description="Its log-probability.")
    bytes: list[int] | None = Field(description="UTF-8 bytes of the token text.")


class ChatTokenLogprob(TopLogprob):
    """The sampled token of a chat logprobs entry, with its alternatives."""

    top_logprobs: list[TopLogprob] = Field(description="The most likely tokens, best first.")


class ChatLogprobs(BaseModel):
    """``choices[].logprobs`` of a chat completion."""

    content: list[ChatTokenLogprob] | None = Field(description="One entry per output token.")


class CompletionLogprobs(BaseModel):
    """``choices[].logprobs`` of a text completion."""

    text_offset: list[int] = Field(description="Character offset of each token in the text.")
    token_logprobs: list[float | None] = Field(description="Each token's log-probability.")
    tokens: list[str] = Field(description="Each token's text.")
    top_logprobs: list[dict[str, float] | None] = Field(
        description="Each position's most likely tokens and the chosen one."
    )


class PromptLogprob(BaseModel):
    """One token of a ``prompt_logprobs`` entry (vLLM's ``Logprob``)."""

    logprob: float = Field(description="Its log-probability at this prompt position.")
    rank: int | None = Field(description="1 + the number of tokens that were more likely.")
    decoded_token: str | None = Field(description="The token's text (or token_id:<id>).")


PromptLogprobs = list[dict[str, PromptLogprob] | None]
"""vLLM's ``prompt_logprobs``: per prompt token, None for the first (nothing predicts it),
then token id (a JSON key, so a string) -> ``PromptLogprob`` for the prompt's own token
and the top alternatives."""


class LogprobRenderer:
    """Turns ``TokenLogprobs`` into response models, decoding token texts in one batch."""

    def __init__(self, tokenizer: TokenizerClient, tokens_as_ids: bool) -> None:
        self.tokenizer = tokenizer
        self.tokens_as_ids = tokens_as_ids

    def chat(self, entries: Sequence[TokenLogprobs]) -> ChatLogprobs:
        """The chat shape of the output tokens' logprobs."""
        text = self._texts(entries, [e.token_id for e in entries])
        content = [
            ChatTokenLogprob(
                token=text[e.token_id], logprob=_finite(e.logprob),
                bytes=list(text[e.token_id].encode()),
                top_logprobs=[TopLogprob(token=text[t], logprob=_finite(lp),
                                         bytes=list(text[t].encode())) for t, lp in e.top])
            for e in entries
        ]
        return ChatLogprobs(content=content)

    def completion(self, entries: Sequence[TokenLogprobs | None], token_ids: Sequence[int],
                   offset: int = 0) -> CompletionLogprobs:
        """The completions shape; ``entries[i]`` is None where nothing predicted the token
        (the first prompt token). Offsets start at ``offset``."""
        text = self._texts([e for e in entries if e is not None], list(token_ids))
        tokens = [text[t] for t in token_ids]
        offsets = []
        for token in tokens:
            offsets.append(offset)
            offset += len(token)
        return CompletionLogprobs(
            text_offset=offsets,
            token_logprobs=[None if e is None else _finite(e.logprob) for e in entries],
            tokens=tokens,
            top_logprobs=[None if e is None else _top_dict(e, text) for e in entries],
        )

    def prompt(self, entries: Sequence[TokenLogprobs | None]) -> PromptLogprobs:
        """vLLM's ``prompt_logprobs`` shape: the prompt's own token first, then its
        ``top`` alternatives (rank 1, 2 ...) that are not that token."""
        present = [e for e in entries if e is not None]
        text = self._texts(present, [e.token_id for e in present])
        rendered: PromptLogprobs = []
        for entry in entries:
            if entry is None:
                rendered.append(None)
                continue
            tokens = {str(entry.token_id): PromptLogprob(logprob=_finite(entry.logprob),
                                                         rank=entry.rank,
                                                         decoded_token=text[entry.token_id])}
            for rank, (token_id, logprob) in enumerate(entry.top, 1):
                tokens.setdefault(str(token_id), PromptLogprob(
                    logprob=_finite(logprob), rank=rank, decoded_token=text[token_id]))
            rendered.append(tokens)
        return rendered

    def _texts(self, entries: Sequence[TokenLogprobs], token_ids: list[int]) -> dict[int, str]:
        ids = list(dict.fromkeys([*token_ids, *(t for e in entries for t, _ in e.top)]))
        if self.tokens_as_ids:
            return {t: f"token_id:{t}" for t in ids}
        return dict(zip(ids, self.tokenizer.token_strings(ids)))


def _finite(logprob: float) -> float:
    return max(logprob, MIN_LOGPROB)


def _top_dict(entry: TokenLogprobs, text: dict[int, str]) -> dict[str, float]:
    top = {text[t]: _finite(lp) for t, lp in entry.top}
    top.setdefault(text[entry.token_id], _finite(entry.logprob))
    return top
