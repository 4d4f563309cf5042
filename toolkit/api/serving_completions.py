"""``POST /v1/completions``."""

from __future__ import annotations

from toolkit.api.generation import ChoiceResult
from toolkit.api.prompts import completion_prompt_ids
from toolkit.api.protocol import CompletionRequest
from toolkit.api.responses import CompletionChoice, CompletionResponse, UsageInfo, now
from toolkit.api.serving_base import OpenAIServing
from toolkit.protocol import RequestOutput


class CompletionServing(OpenAIServing[CompletionRequest]):
    """Text completions: raw prompts (strings or token ids), n choices per prompt."""

    request_model = CompletionRequest
    id_prefix = "cmpl"
    prompt_param = "prompt"

    def prompt_ids(self, body: CompletionRequest) -> list[list[int]]:
        """Token ids of each prompt."""
        return completion_prompt_ids(self.engine.tokenizer, body)

    def response(
        self,
        body: CompletionRequest,
        response_id: str,
        results: list[ChoiceResult],
        usage: UsageInfo,
    ) -> CompletionResponse:
        """One text per choice; choice index = prompt index * n + choice."""
        choices = [
            CompletionChoice(index=r.index, text=r.text, finish_reason=r.finish_reason)
            for r in results
        ]
        return self._body(response_id, now(), choices, usage)

    def delta_chunks(
        self, response_id: str, created: int, index: int, output: RequestOutput
    ) -> list[CompletionResponse]:
        """A text delta (if any text came), then a finish chunk when the choice ends."""
        choices = []
        if output.new_text:
            choices.append(CompletionChoice(index=index, text=output.new_text))
        if output.finished:
            choices.append(
                CompletionChoice(index=index, text="", finish_reason=output.finish_reason)
            )
        return [self._body(response_id, created, [choice]) for choice in choices]

    def usage_chunk(self, response_id: str, created: int, usage: UsageInfo) -> CompletionResponse:
        """The usage-only chunk of ``stream_options.include_usage``."""
        return self._body(response_id, created, [], usage)

    def _body(
        self,
        response_id: str,
        created: int,
        choices: list[CompletionChoice],
        usage: UsageInfo | None = None,
    ) -> CompletionResponse:
        return CompletionResponse(
            id=response_id, created=created, model=self.engine.model_name,
            choices=choices, usage=usage,
        )
