"""Benchmark metrics from request traces: latency percentiles, throughput and goodput.

Pure maths on RequestRecords; no clocks, no I/O. Latencies are in seconds. A request that
failed counts as an error and in no latency or token figure.
"""

from __future__ import annotations

import numpy as np

from toolkit.bench.records import RequestRecord
from toolkit.bench.roofline import ROOFLINE_KEYS
from toolkit.config.schema import SloConfig

PERCENTILES = (50, 90, 99)


def compute_metrics(records: list[RequestRecord], duration_s: float,
                    slo: SloConfig) -> dict[str, float | int]:
    """Every figure of one run, flat (`ttft_p99_s`, `output_tokens_per_s`, ...).

    ``duration_s`` is the wall time of the measured run (first send to last response);
    rates divide by it. Goodput counts completed requests that meet every bound of ``slo``.
    """
    done = [r for r in records if r.ok]
    num_output = sum(r.num_output_tokens for r in done)
    num_prompt = sum(r.num_prompt_tokens for r in done)
    num_good = sum(meets_slo(r, slo) for r in done)
    metrics: dict[str, float | int] = {
        "num_requests": len(records),
        "num_completed": len(done),
        "num_errors": len(records) - len(done),
        "duration_s": duration_s,
        "num_prompt_tokens": num_prompt,
        "num_output_tokens": num_output,
        "requests_per_s": _rate(len(done), duration_s),
        "output_tokens_per_s": _rate(num_output, duration_s),
        "total_tokens_per_s": _rate(num_output + num_prompt, duration_s),
        "goodput_requests_per_s": _rate(num_good, duration_s),
        "slo_attainment": num_good / len(done) if done else 0.0,
    }
    metrics.update(summarize("ttft", [r.ttft for r in done]))
    metrics.update(summarize("itl", [gap for r in done for gap in r.itls]))
    metrics.update(summarize("tpot", [r.tpot for r in done if r.tpot is not None]))
    metrics.update(summarize("e2e", [r.e2e for r in done]))
    return metrics


SPECULATIVE_KEYS = ("spec_num_draft_tokens", "spec_num_accepted_tokens",
                    "spec_acceptance_rate", "spec_mean_accepted_length")
"""The engine's speculative-decoding figures a job adds to its metrics."""


def metric_keys() -> list[str]:
    """Every key compute_metrics and a job's engine figures report, in report order."""
    return [*compute_metrics([], 0.0, SloConfig()), *SPECULATIVE_KEYS, *ROOFLINE_KEYS]


def meets_slo(record: RequestRecord, slo: SloConfig) -> bool:
    """True when the request completed within every bound that ``slo`` sets."""
    if not record.ok:
        return False
    checks = [(slo.max_ttft_s, record.ttft), (slo.max_e2e_s, record.e2e)]
    if record.tpot is not None:
        checks.append((slo.max_tpot_s, record.tpot))
    return all(bound is None or value <= bound for bound, value in checks)


def summarize(name: str, values: list[float]) -> dict[str, float]:
    """Mean and PERCENTILES (linear interpolation) as `{name}_mean_s`, `{name}_p50_s` ...;
    NaN when there are no values."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return {f"{name}_{k}_s": float("nan") for k in ("mean", *(f"p{p}" for p in PERCENTILES))}
    summary = {f"{name}_mean_s": float(array.mean())}
    for p in PERCENTILES:
        summary[f"{name}_p{p}_s"] = float(np.percentile(array, p))
    return summary


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats, where x is a latency (lower is better)
    and y a throughput (higher is better); sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_y = [], float("-inf")
    for i in order:
        x, y = points[i]
        if np.isnan(x) or np.isnan(y):
            continue
        if y > best_y:
            front.append(i)
            best_y = y
    return front


def _rate(count: float, duration_s: float) -> float:
    return count / duration_s if duration_s > 0 else 0.0
