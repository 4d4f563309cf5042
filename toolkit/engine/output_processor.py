"""Sampled tokens -> text deltas, with stop strings found and cut, and logprobs attached."""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.protocol import (
    Request,
    RequestOutput,
    RunnerOutput,
    SamplingParams,
    TokenLogprobs,
)
from toolkit.tokenizer.detokenizer import IncrementalDetokenizer
from toolkit.tokenizer.tokenizer import Tokenizer


@dataclass
class _TextState:
    detokenizer: IncrementalDetokenizer
    params: SamplingParams
    text: str = ""
    num_sent_chars: int = 0
    num_sent_tokens: int = 0
    pending_logprobs: list[TokenLogprobs] = field(default_factory=list)
    cumulative_logprob: float = 0.0
    prompt_logprobs: list[TokenLogprobs | None] | None = None
    prompt_logprobs_sent: bool = False

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
        params = request.sampling_params
        detokenizer = IncrementalDetokenizer(
            self.tokenizer, request.prompt_token_ids, params.skip_special_tokens,
            params.spaces_between_special_tokens)
        state = _TextState(detokenizer, params)
        if params.prompt_logprobs is not None:
            state.prompt_logprobs = [None] * request.num_prompt_tokens
        self._states[request.request_id] = state

    def __len__(self) -> int:
        """Requests whose text state is held."""
        return len(self._states)

    def remove(self, request_id: str) -> None:
        self._states.pop(request_id, None)

    def record(self, request_id: str, runner_output: RunnerOutput) -> None:
        """Keep ``request_id``'s logprobs of a step until ``process`` sends them with
        their tokens."""
        state = self._states.get(request_id)
        if state is None:
            return
        state.pending_logprobs.extend(runner_output.logprobs.get(request_id, ()))
        prompt = runner_output.prompt_logprobs.get(request_id)
        if prompt is not None and state.prompt_logprobs is not None:
            first, entries = prompt
            state.prompt_logprobs[first:first + len(entries)] = entries

    def process(self, request: Request) -> tuple[RequestOutput, bool]:
        """The delta for a request that just got tokens; True when a stop string hit
        (the caller then finishes the request with reason "stop"). A stop string completed
        by one token of a multi-token (speculative) run drops the tokens after it."""
        state = self._states[request.request_id]
        new_token_ids = request.output_token_ids[state.num_sent_tokens:]
        if len(new_token_ids) > 1 and state.params.stop:
            new_token_ids, stop_hit = self._detokenize_each(state, request, new_token_ids)
        else:
            delta = state.detokenizer.step(new_token_ids)
            state.text += delta
            stop_hit = (request.num_output_tokens >= state.params.min_tokens
                        and self._cut_at_stop(state, len(delta)))
        state.num_sent_tokens = request.num_output_tokens
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
        self._attach_logprobs(state, output)
        return output, stop_hit

    def _detokenize_each(self, state: _TextState, request: Request,
                         new_token_ids: list[int]) -> tuple[list[int], bool]:
        """Detokenize a run token by token, stopping at the token that completes a stop
        string; the request's output is cut after it. (The kept tokens, stop hit.)"""
        first = state.num_sent_tokens
        for i, token in enumerate(new_token_ids):
            delta = state.detokenizer.step([token])
            state.text += delta
            if first + i + 1 >= state.params.min_tokens and self._cut_at_stop(state, len(delta)):
                del request.output_token_ids[first + i + 1:]
                return new_token_ids[:i + 1], True
        return new_token_ids, False

    @staticmethod
    def _attach_logprobs(state: _TextState, output: RequestOutput) -> None:
        """The pending logprobs of the delta's tokens (entries of tokens dropped after a
        stop condition are discarded)."""
        if state.params.logprobs is not None:
            output.logprobs = state.pending_logprobs[:len(output.new_token_ids)]
            state.pending_logprobs = []
            state.cumulative_logprob += sum(e.logprob for e in output.logprobs)
            output.cumulative_logprob = state.cumulative_logprob
        if state.prompt_logprobs is not None and not state.prompt_logprobs_sent:
            output.prompt_logprobs = state.prompt_logprobs
            state.prompt_logprobs_sent = True

    @staticmethod
    def _cut_at_stop(state: _TextState, num_new_chars: int) -> bool:
        if not state.params.stop or num_new_chars == 0:
            return False
        search_from = max(0, len(state.text) - num_new_chars - state.max_stop_len + 1)
        hits = [(i, s) for s in state.params.stop
                if (i := state.text.find(s, search_from)) >= 0]
        if not hits:
            return False
        index, stop = min(hits)
        keep = len(stop) if state.params.include_stop_str_in_output else 0
        state.text = state.text[: index + keep]
        return True
