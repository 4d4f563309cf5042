"""The load generator: sends a workload at a Poisson rate or under a concurrency cap, for
a request count or a duration, and records every request's trace."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

import numpy as np
from tqdm import tqdm

from toolkit.bench.records import RequestRecord
from toolkit.bench.workload import BenchRequest
from toolkit.config.schema import BenchConfig


class BenchClient(Protocol):
    """What the load generator drives: the in-process engine or an HTTP server."""

    async def send(self, request: BenchRequest, record: RequestRecord) -> None:
        """Run one request to its end, appending chunk times and setting token counts on
        `record`; raise on failure."""

    async def close(self) -> None:
        """Release connections."""


async def run_load(client: BenchClient, requests: list[BenchRequest], cfg: BenchConfig,
                   label: str = "bench") -> tuple[list[RequestRecord], float]:
    """Warm up with the first cfg.num_warmup requests, then run the measured load.

    Returns the records in send order and the measured duration: first send to last end.
    """
    for request in requests[:cfg.num_warmup]:
        await _send(client, request, RequestRecord(time.perf_counter()))
    total = None if cfg.duration_s else len(requests)
    semaphore = asyncio.Semaphore(cfg.max_concurrency) if cfg.max_concurrency else None
    records: list[RequestRecord] = []
    tasks = []
    with tqdm(total=total, desc=label, unit="req", disable=not cfg.progress,
              leave=False) as progress:
        start = time.perf_counter()
        async for request in arrivals(_requests(requests, cfg), cfg, start):
            if semaphore is not None:
                await semaphore.acquire()
            record = RequestRecord(time.perf_counter())
            records.append(record)
            tasks.append(asyncio.create_task(
                _send(client, request, record, semaphore, progress)))
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
                semaphore: asyncio.Semaphore | None = None, progress: tqdm | None = None) -> None:
    """Send one request; a failure is recorded on the record, never raised."""
    try:
        await client.send(request, record)
    except Exception as exc:  # noqa: BLE001 - every failure is a benchmark error to count
        record.error = f"{type(exc).__name__}: {exc}"
    finally:
        record.end = time.perf_counter()
        if semaphore is not None:
            semaphore.release()
        if progress is not None:
            progress.update(1)
