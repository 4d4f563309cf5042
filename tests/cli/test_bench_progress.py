"""Bench jobs' request progress through the CLI's rich console: every finished request
advances the bar, and the bar is left at its final count (N/N) when the job ends."""

from __future__ import annotations

import asyncio
import io
import re

from rich.console import Console

from toolkit.bench.loadgen import run_load
from toolkit.bench.records import RequestRecord
from toolkit.bench.workload import build_workload
from toolkit.cli.progress import request_bars
from toolkit.compose import compose_config


class SlowClient:
    """Answers every request with three chunks, a little apart, so requests overlap."""

    async def send(self, request, record: RequestRecord) -> None:
        for _ in range(3):
            await asyncio.sleep(0.002)
            record.chunk_times.append(0.0)
        record.num_output_tokens = 3

    async def close(self) -> None:
        pass


def bench_config(*overrides: str):
    return compose_config(["bench.num_requests=16", "bench.num_warmup=2", "bench.prompt_len=4",
                           "bench.max_concurrency=3", *overrides], "bench").bench


def test_the_bar_ends_at_every_request_of_the_job():
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=100)
    cfg = bench_config()
    records, _ = asyncio.run(run_load(SlowClient(), build_workload(cfg), cfg,
                                      "job 0 (max_num_seqs=4)", request_bars(console)))
    assert len(records) == 16 and all(r.ok for r in records)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())
    assert "job 0 (max_num_seqs=4)" in plain
    assert plain.rstrip().splitlines()[-1].split()[-3:-1] == ["16/16", "requests"]


def test_nothing_is_drawn_off_a_terminal_or_with_progress_off():
    for console, overrides in ((Console(file=io.StringIO()), ()),
                               (Console(file=io.StringIO(), force_terminal=True),
                                ("bench.progress=false",))):
        cfg = bench_config(*overrides)
        records, _ = asyncio.run(run_load(SlowClient(), build_workload(cfg), cfg, "job",
                                          request_bars(console)))
        assert len(records) == 16 and console.file.getvalue() == ""
