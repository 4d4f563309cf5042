"""Boundary dataclasses shared by the API, the engine and the runner (no torch, no HTTP)."""

from toolkit.protocol.guided import GuidedSpec
from toolkit.protocol.outputs import (
    RequestOutput,
    RunnerOutput,
    SchedulerOutput,
    TokenLogprobs,
)
from toolkit.protocol.request import Request, RequestStatus
from toolkit.protocol.sampling_params import SamplingParams

__all__ = [
    "GuidedSpec",
    "Request",
    "RequestOutput",
    "RequestStatus",
    "RunnerOutput",
    "SamplingParams",
    "SchedulerOutput",
    "TokenLogprobs",
]
