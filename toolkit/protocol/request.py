"""The engine's mutable state of one request."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from toolkit.protocol.multimodal import MultiModalInput
from toolkit.protocol.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"

    @property
    def finished(self) -> bool:
        return self.value in ("stop", "length", "abort")


@dataclass(eq=False)
class Request:
    """A request as the scheduler sees it: tokens so far, KV progress, pages held.

    ``num_computed_tokens`` counts the tokens whose K/V sit in the cache. A request needs
    ``num_tokens - num_computed_tokens`` more tokens of forward work before it samples.
    """

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    arrival_time: float = 0.0
    output_token_ids: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    num_computed_tokens: int = 0
    page_ids: list[int] = field(default_factory=list)
    num_preemptions: int = 0
    priority: int = 0
    """Lower runs earlier under the priority scheduling policy."""
    draft_token_ids: list[int] = field(default_factory=list)
    """Speculative decoding: drafts the runner proposed after the last step, to be fed
    after the request's last token in the next one."""
    multimodal: MultiModalInput | None = None
    """The prompt's images (a vision-language model's request), None for text."""

    @property
    def lora_name(self) -> str | None:
        """The key of the LoRA adapter this request runs with (None: the base model);
        it travels in ``sampling_params.lora_name``."""
        return self.sampling_params.lora_name

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def finished(self) -> bool:
        return self.status.finished
