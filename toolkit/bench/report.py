"""The summary of a benchmark run: one row per job, as Markdown (summary.md) and CSV
(summary.csv, every metric)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from toolkit.bench.hardware import describe_hardware
from toolkit.bench.job import JobResult
from toolkit.bench.roofline import ROOFLINE_KEYS, MachineLimits, markdown_roofline

COLUMNS = (
    ("req/s", "requests_per_s", 1, 2),
    ("out tok/s", "output_tokens_per_s", 1, 1),
    ("total tok/s", "total_tokens_per_s", 1, 1),
    ("goodput req/s", "goodput_requests_per_s", 1, 2),
    ("SLO %", "slo_attainment", 100, 0),
    ("TTFT p50 ms", "ttft_p50_s", 1000, 0),
    ("TTFT p99 ms", "ttft_p99_s", 1000, 0),
    ("ITL p50 ms", "itl_p50_s", 1000, 1),
    ("ITL p99 ms", "itl_p99_s", 1000, 1),
    ("TPOT p50 ms", "tpot_p50_s", 1000, 1),
    ("E2E p50 s", "e2e_p50_s", 1, 2),
    ("E2E p99 s", "e2e_p99_s", 1, 2),
    ("errors", "num_errors", 1, 0),
)
"""(heading, metric key, scale, decimals) of the Markdown table."""


def write_summary(output_dir: Path, results: list[JobResult], axes: list[str],
                  limits: MachineLimits | None = None) -> None:
    """summary.md (with the roofline section when ``limits`` are given) and summary.csv."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "summary.md").write_text(markdown_summary(results, axes, limits))
    write_csv(output_dir / "summary.csv", results, axes)


def markdown_summary(results: list[JobResult], axes: list[str],
                     limits: MachineLimits | None = None) -> str:
    lines = [f"# Benchmark: {len(results)} job(s)", "",
             f"- hardware: {describe_hardware()}",
             f"- target: {', '.join(sorted({r.target for r in results}))}", "",
             markdown_table(results, axes), ""]
    if limits is not None:
        rows = [(r.name, r.metrics) for r in results if ROOFLINE_KEYS[0] in r.metrics]
        lines += [markdown_roofline(limits, rows), ""]
    return "\n".join(lines)


def markdown_table(results: list[JobResult], axes: list[str]) -> str:
    headings = ["job", *axes, *(c[0] for c in COLUMNS)]
    rows = [[r.name, *(r.axes.get(a, "") for a in axes),
             *(_format(r.metrics[key] * scale, decimals) for _, key, scale, decimals in COLUMNS)]
            for r in results]
    return "\n".join(["| " + " | ".join(headings) + " |",
                      "|" + "|".join("---" for _ in headings) + "|",
                      *("| " + " | ".join(row) + " |" for row in rows)])


def write_csv(path: Path, results: list[JobResult], axes: list[str]) -> None:
    metric_keys = list(results[0].metrics) if results else []
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["job", *axes, "overrides", *metric_keys])
        for r in results:
            writer.writerow([r.name, *(r.axes.get(a, "") for a in axes), " ".join(r.overrides),
                             *(r.metrics[k] for k in metric_keys)])


def _format(value: float, decimals: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{decimals}f}"
