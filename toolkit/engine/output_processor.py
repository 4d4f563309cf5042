"""Sampled tokens -> text deltas, with stop strings found and cut."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.protocol import Request, RequestOutput, SamplingParams
from toolkit.tokenizer.detokenizer import IncrementalDetokenizer
from toolkit.tokenizer.tokenizer import Tokenizer


@dataclass
class _TextState:
    detokenizer: IncrementalDetokenizer
    params: SamplingParams
    text: str = ""
    num_sent_chars: int = 0
    num_sent_tokens: int = 0

    @property
    def max_stop_len(self) -> int:
        return max((len(s) for s in self.params.stop), default=0)


class OutputProcessor:
    """Keeps each request's text; while streaming, holds back the few characters that
    could still turn out to be the start of a stop string."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._states: dict[str, _TextState] = {}

    def add_request(self, request: Request) -> None:
        detokenizer = IncrementalDetokenizer(self.tokenizer, request.prompt_token_ids)
        self._states[request.request_id] = _TextState(detokenizer, request.sampling_params)

    def remove(self, request_id: str) -> None:
        self._states.pop(request_id, None)

    def process(self, request: Request) -> tuple[RequestOutput, bool]:
        """The delta for a request that just got a token; True when a stop string hit
        (the caller then finishes the request with reason "stop")."""
        state = self._states[request.request_id]
        new_token_ids = request.output_token_ids[state.num_sent_tokens:]
        state.num_sent_tokens = request.num_output_tokens
        delta = state.detokenizer.step(new_token_ids)
        state.text += delta
        stop_hit = self._cut_at_stop(state, len(delta))
        finish_reason = "stop" if stop_hit else (
            request.status.value if request.finished else None)
        end = len(state.text)
        if finish_reason is None:
            end -= max(state.max_stop_len - 1, 0)
        new_text = state.text[state.num_sent_chars:end] if end > state.num_sent_chars else ""
        state.num_sent_chars = max(state.num_sent_chars, end)
        output = RequestOutput(
            request_id=request.request_id, new_token_ids=new_token_ids, new_text=new_text,
            finish_reason=finish_reason, num_prompt_tokens=request.num_prompt_tokens,
            num_output_tokens=request.num_output_tokens)
        return output, stop_hit

    @staticmethod
    def _cut_at_stop(state: _TextState, num_new_chars: int) -> bool:
        if not state.params.stop or num_new_chars == 0:
            return False
        search_from = max(0, len(state.text) - num_new_chars - state.max_stop_len + 1)
        hits = [i for i in (state.text.find(s, search_from) for s in state.params.stop) if i >= 0]
        if not hits:
            return False
        state.text = state.text[: min(hits)]
        return True
