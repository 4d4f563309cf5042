"""Run a request's generations on the engine: one stream per choice, merged into one.

Leaving the merged stream early (an error, a client that went away, cancellation) closes
every per-choice engine stream, which aborts those requests in the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from toolkit.api.engine_client import EngineClient
from toolkit.api.http.errors import APIError, engine_failure
from toolkit.protocol import RequestOutput, SamplingParams, TokenLogprobs

logger = logging.getLogger(__name__)

_DONE = object()
T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    """One generation: the choice ``index`` of a response and what the engine runs for it."""

    index: int
    """Position among the request's generations (prompt * samples per prompt + sample)."""
    request_id: str
    """The engine's id of this generation."""
    prompt_token_ids: list[int]
    """The prompt, after the chat template and truncation."""
    params: SamplingParams
    """How it is sampled."""
    priority: int = 0
    """Scheduling priority (lower first, priority policy only)."""
    multimodal: Any = None
    """The prompt's images (a toolkit.protocol MultiModalInput), None for text."""


@dataclass
class ChoiceResult:
    """A choice's text, tokens, logprobs and counts, aggregated from its deltas."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    num_output_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprobs | None] | None = None
    cumulative_logprob: float = 0.0

    def add(self, output: RequestOutput) -> None:
        """Fold one delta into the result."""
        self.text += output.new_text
        self.num_output_tokens = output.num_output_tokens
        self.token_ids.extend(output.new_token_ids)
        self.logprobs.extend(output.logprobs or ())
        if output.prompt_logprobs is not None:
            self.prompt_logprobs = output.prompt_logprobs
        if output.cumulative_logprob is not None:
            self.cumulative_logprob = output.cumulative_logprob
        if output.finished:
            self.finish_reason = output.finish_reason


def best_choices(results: list[ChoiceResult], samples: int, n: int) -> list[ChoiceResult]:
    """Of each prompt's ``samples`` results, the ``n`` with the highest cumulative logprob,
    re-indexed as prompt * n + rank (the identity when samples == n)."""
    chosen = []
    for p in range(0, len(results), samples):
        group = results[p:p + samples]
        if samples > n:
            group = sorted(group, key=lambda r: r.cumulative_logprob, reverse=True)[:n]
        for rank, result in enumerate(group):
            result.index = p // samples * n + rank
            chosen.append(result)
    return chosen


def check_output(output: RequestOutput) -> None:
    """Raise a 500 (``server_error``) when the engine failed this request."""
    if output.error is not None:
        logger.error("request %s failed in the engine: %s", output.request_id, output.error)
        raise APIError(
            f"The engine failed to generate a response: {output.error}",
            status=500,
            code="engine_error",
        )


async def merge_outputs(
    engine: EngineClient, jobs: list[Job]
) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Yield ``(choice index, delta)`` from all jobs as they arrive, failing fast on errors.

    An engine failure (``RequestOutput.error`` or an exception) raises ``APIError`` (500).
    """
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    tasks = [asyncio.create_task(_pump(engine, job, queue)) for job in jobs]
    remaining = len(jobs)
    try:
        while remaining:
            index, item = await queue.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, BaseException):
                error = engine_failure(item)
                if error.status == 500:
                    logger.error("generation failed in the engine", exc_info=item)
                raise error
            else:
                check_output(item)
                yield index, item
    finally:
        await _cancel(tasks)


async def collect(engine: EngineClient, jobs: list[Job]) -> list[ChoiceResult]:
    """Run all jobs to completion; one result per job, in choice order."""
    results = [ChoiceResult(job.index) for job in jobs]
    by_index = {result.index: result for result in results}
    stream = merge_outputs(engine, jobs)
    try:
        async for index, output in stream:
            by_index[index].add(output)
    finally:
        await stream.aclose()
    return results


async def prefetched(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Wait for the first item of ``stream`` and return a stream that replays it first.

    A stream response commits to status 200 when it starts; waiting for the first delta
    lets an engine failure at admission still be answered with a proper error status.
    """
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        return stream
    except BaseException:
        await stream.aclose()
        raise

    async def replay() -> AsyncIterator[T]:
        try:
            yield first
            async for item in stream:
                yield item
        finally:
            await stream.aclose()

    return replay()


async def _pump(engine: EngineClient, job: Job, queue: asyncio.Queue) -> None:
    """Forward one engine stream into the shared queue, then a done marker (or the error,
    including one raised when the stream is opened)."""
    stream = None
    try:
        media = {"multimodal": job.multimodal} if job.multimodal is not None else {}
        stream = engine.generate(job.request_id, job.prompt_token_ids, job.params,
                                 priority=job.priority, **media)
        async for output in stream:
            queue.put_nowait((job.index, output))
        queue.put_nowait((job.index, _DONE))
    except Exception as exc:  # noqa: BLE001 - the merged stream reports any failure
        queue.put_nowait((job.index, exc))
    finally:
        if stream is not None:
            await stream.aclose()


async def _cancel(tasks: list[asyncio.Task]) -> None:
    """Cancel the pump tasks that are still running and wait for them to unwind."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
