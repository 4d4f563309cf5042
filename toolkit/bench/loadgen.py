"""The load generator: sends a workload at a Poisson rate or under a concurrency cap, for
a request count or a duration, and records every request's trace."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import ContextManager, Protocol

import numpy as np

from toolkit.bench.records import RequestRecord
from toolkit.bench.workload import BenchRequest
from toolkit.config.schema import BenchConfig

Advance = Callable[[], None]
"""Marks one more request finished."""
ProgressFactory = Callable[[str, "int | None"], ContextManager[Advance]]
"""(label, total requests or None for a timed run) -> a context that shows the progress
of one job while it runs and yields its Advance (the CLI passes a rich bar)."""


@contextlib.contextmanager
def no_progress(label: str, total: int | None) -> Iterator[Advance]:
    """The ProgressFactory that shows nothing."""
    yield lambda: None


class BenchClient(Protocol):
    """What the load generator drives: the in-process engine or an HTTP server."""

    async def send(self, request: BenchRequest, record: RequestRecord) -> None:
        """Run one request to its end, appending chunk times and setting token counts on
        `record`; raise on failure."""

    async def close(self) -> None:
        """Release connections."""


async def run_load(client: BenchClient, requests: list[BenchRequest], cfg: BenchConfig,
                   label: str = "bench", progress: ProgressFactory | None = None
                   ) -> tuple[list[RequestRecord], float]:
    """Warm up with the first cfg.num_warmup requests, then run the measured load (shown
    through ``progress`` when cfg.progress is on).

    Returns the records in send order and the measured duration: first send to last end.
    """
    for request in requests[:cfg.num_warmup]:
        await _send(client, request, RequestRecord(time.perf_counter()))
    total = None if cfg.duration_s else len(requests)
    semaphore = asyncio.Semaphore(cfg.max_concurrency) if cfg.max_concurrency else None
    records: list[RequestRecord] = []
    tasks = []
    show = progress if progress is not None and cfg.progress else no_progress
    with show(label, total) as advance:
        start = time.perf_counter()
        async for request in arrivals(_requests(requests, cfg), cfg, start):
            if semaphore is not None:
                await semaphore.acquire()
            record = RequestRecord(time.perf_counter())
            records.append(record)
            tasks.append(asyncio.create_task(
                _send(client, request, record, semaphore, advance)))
        await asyncio.gather(*tasks)
    end = max((r.end for r in records), default=start)
    return records, end - start


async def arrivals(requests: Iterable[BenchRequest], cfg: BenchConfig,
                   start: float) -> AsyncIterator[BenchRequest]:
    """Yield each request at its send time: Poisson arrivals at cfg.request_rate (seeded),
    or at once without a rate; stop after cfg.duration_s when it is set."""
    rng = np.random.default_rng(cfg.seed + 1)
    send_at = start
    for request in requests:
        if cfg.duration_s is not None and time.perf_counter() - start >= cfg.duration_s:
            return
        if cfg.request_rate is not None:
            send_at += rng.exponential(1.0 / cfg.request_rate)
            delay = send_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        yield request


def _requests(requests: list[BenchRequest], cfg: BenchConfig) -> Iterable[BenchRequest]:
    return itertools.cycle(requests) if cfg.duration_s is not None else requests


async def _send(client: BenchClient, request: BenchRequest, record: RequestRecord,
                semaphore: asyncio.Semaphore | None = None, advance: Advance | None = None
                ) -> None:
    """Send one request; a failure is recorded on the record, never raised."""
    try:
        await client.send(request, record)
    except Exception as exc:  # noqa: BLE001 - every failure is a benchmark error to count
        record.error = f"{type(exc).__name__}: {exc}"
    finally:
        record.end = time.perf_counter()
        if semaphore is not None:
            semaphore.release()
        if advance is not None:
            advance()
