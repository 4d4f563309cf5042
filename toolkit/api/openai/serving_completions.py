"""``POST /v1/completions``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from toolkit.api.openai.generation import ChoiceResult
from toolkit.api.openai.logprobs import CompletionLogprobs
from toolkit.api.openai.prompts import completion_prompt_ids, truncate_prompt
from toolkit.api.openai.protocol import CompletionRequest
from toolkit.api.openai.responses import CompletionChoice, CompletionResponse, UsageInfo
from toolkit.api.openai.serving_base import OpenAIServing, Turn
from toolkit.protocol import RequestOutput, TokenLogprobs

CompletionTurn = Turn[CompletionRequest]


class CompletionServing(OpenAIServing[CompletionRequest]):
    """Text completions: raw prompts (strings or token ids), n choices per prompt."""

    request_model = CompletionRequest
    id_prefix = "cmpl"
    prompt_param = "prompt"

    def prompt_ids(self, body: CompletionRequest) -> list[list[int]]:
        """Token ids of each prompt, truncated to the last truncate_prompt_tokens."""
        return [truncate_prompt(ids, body.truncate_prompt_tokens)
                for ids in completion_prompt_ids(self.engine.tokenizer, body)]

    def echo_texts(self, body: CompletionRequest, prompts: list[list[int]]) -> list[str]:
        """With echo, each prompt's text (string prompts as sent, token ids decoded)."""
        if not body.echo:
            return [""] * len(prompts)
        originals = body.prompts()
        return [p if isinstance(p, str) and body.truncate_prompt_tokens is None
                else self.engine.tokenizer.decode(ids, skip_special_tokens=False)
                for p, ids in zip(originals, prompts)]

    def response(self, turn: CompletionTurn, results: list[ChoiceResult],
                 usage: UsageInfo) -> CompletionResponse:
        """One text per choice; choice index = prompt index * n + choice."""
        choices = []
        for r in results:
            prompt = turn.prompts[r.index // turn.body.n]
            logprobs = self._logprobs(turn, prompt, r.prompt_logprobs, r.logprobs, r.token_ids)
            choices.append(CompletionChoice(index=r.index, text=turn.echo_of(r.index) + r.text,
                                            logprobs=logprobs, finish_reason=r.finish_reason,
                                            prompt_logprobs=self.prompt_logprobs(turn, r)))
        return self._body(turn, choices, usage)

    def delta_chunks(self, turn: CompletionTurn, index: int,
                     output: RequestOutput) -> list[CompletionResponse]:
        """A text delta (echo first), then a finish chunk when the choice ends."""
        first = index not in turn.started
        text = (turn.echo_of(index) if first else "") + output.new_text
        prompt = turn.prompts[index // turn.body.n] if first else []
        logprobs = self._logprobs(turn, prompt, output.prompt_logprobs if first else None,
                                  output.logprobs or [], output.new_token_ids,
                                  turn.text_offsets.get(index, 0))
        if logprobs is not None and logprobs.tokens:
            turn.text_offsets[index] = logprobs.text_offset[-1] + len(logprobs.tokens[-1])
        choices = []
        if text or (logprobs is not None and logprobs.tokens):
            choices.append(CompletionChoice(index=index, text=text, logprobs=logprobs))
        if output.finished:
            choices.append(
                CompletionChoice(index=index, text="", finish_reason=output.finish_reason)
            )
        return [self._body(turn, [choice]) for choice in choices]

    def usage_chunk(self, turn: CompletionTurn, usage: UsageInfo) -> CompletionResponse:
        """The usage-only chunk of ``stream_options.include_usage``."""
        return self._body(turn, [], usage)

    def _logprobs(self, turn: CompletionTurn, prompt: list[int],
                  prompt_logprobs: Sequence[TokenLogprobs | None] | None,
                  logprobs: Sequence[TokenLogprobs], token_ids: list[int],
                  offset: int = 0) -> CompletionLogprobs | None:
        """Prompt (with echo) then output logprobs, or None when not asked for."""
        if turn.body.logprobs is None:
            return None
        entries: list[TokenLogprobs | None] = list(logprobs)
        ids = list(token_ids[: len(entries)])
        if turn.body.echo and prompt:
            echoed = [None if e is None else replace(e, top=e.top[:turn.body.logprobs])
                      for e in prompt_logprobs or [None] * len(prompt)]
            entries = [*echoed, *entries]
            ids = [*prompt, *ids]
        return self.logprobs.completion(entries, ids, offset)

    def _body(self, turn: CompletionTurn, choices: list[CompletionChoice],
              usage: UsageInfo | None = None) -> CompletionResponse:
        return CompletionResponse(
            id=turn.response_id, created=turn.created,
            model=self.ctx.response_model(turn.body.model),
            choices=choices, usage=usage,
        )
