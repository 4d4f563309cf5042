"""Test-side entry to the runner's real ForwardBatch builder, for hand-made steps."""

from __future__ import annotations

from toolkit.attention.forward_batch import ForwardBatch
from toolkit.protocol import Request, SamplingParams
from toolkit.protocol.outputs import ScheduledRequest
from toolkit.runner.batch_builder import build_forward_batch as build_from_scheduled


def build_forward_batch(requests: list[tuple[list[int], int, list[int]]],
                        page_size: int) -> ForwardBatch:
    """One step for requests given as (new token ids, position of the first one, page ids).

    The pages must cover every position up to start + len(tokens); each request samples
    from its last token. Earlier positions' token ids are irrelevant (their K/V is cached).
    """
    scheduled = []
    for i, (tokens, start, pages) in enumerate(requests):
        assert len(pages) >= -(-(start + len(tokens)) // page_size), "not enough pages"
        request = Request(f"r{i}", [0] * start + list(tokens), SamplingParams())
        request.page_ids = list(pages)
        scheduled.append(ScheduledRequest(request, start, len(tokens)))
    return build_from_scheduled(scheduled, page_size)
