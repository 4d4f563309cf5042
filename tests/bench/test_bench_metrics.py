"""Metrics maths on a synthetic trace whose answers are worked out by hand."""

from __future__ import annotations

import math

import pytest

from toolkit.bench.metrics import compute_metrics, meets_slo, pareto_front, summarize
from toolkit.bench.records import RequestRecord
from toolkit.config.schema import SloConfig


def trace() -> list[RequestRecord]:
    """Three good requests and one failure over a 4-second run.

    A: sent 0.0, chunks 0.5 1.0 1.5 (3 tokens), ends 1.5 -> TTFT 0.5, ITL 0.5 0.5, TPOT 0.5
    B: sent 1.0, chunks 3.0 3.2 (2 tokens), ends 3.2     -> TTFT 2.0, ITL 0.2, TPOT 0.2
    C: sent 2.0, chunk 2.1 (1 token), ends 4.0           -> TTFT 0.1, no ITL, no TPOT
    D: sent 2.5, fails at 2.6
    """
    return [
        RequestRecord(0.0, 1.5, [0.5, 1.0, 1.5], num_prompt_tokens=10, num_output_tokens=3),
        RequestRecord(1.0, 3.2, [3.0, 3.2], num_prompt_tokens=20, num_output_tokens=2),
        RequestRecord(2.0, 4.0, [2.1], num_prompt_tokens=30, num_output_tokens=1),
        RequestRecord(2.5, 2.6, [], error="HTTP 500: boom"),
    ]


def test_counts_rates_and_percentiles_of_a_known_trace():
    m = compute_metrics(trace(), 4.0, SloConfig(max_ttft_s=1.0))
    assert (m["num_requests"], m["num_completed"], m["num_errors"]) == (4, 3, 1)
    assert (m["num_prompt_tokens"], m["num_output_tokens"]) == (60, 6)
    assert m["requests_per_s"] == pytest.approx(0.75)
    assert m["output_tokens_per_s"] == pytest.approx(1.5)
    assert m["total_tokens_per_s"] == pytest.approx(16.5)
    # TTFTs 0.1 0.5 2.0: median 0.5; p90 = 0.5 + 0.8 * 1.5 (linear interpolation)
    assert m["ttft_p50_s"] == pytest.approx(0.5)
    assert m["ttft_p90_s"] == pytest.approx(1.7)
    assert m["ttft_mean_s"] == pytest.approx(2.6 / 3)
    # ITLs pooled over requests: 0.2 0.5 0.5
    assert m["itl_p50_s"] == pytest.approx(0.5)
    assert m["itl_mean_s"] == pytest.approx(0.4)
    assert m["tpot_p50_s"] == pytest.approx(0.35)
    # E2E 1.5 2.2 2.0
    assert m["e2e_p50_s"] == pytest.approx(2.0)
    assert m["e2e_p99_s"] == pytest.approx(2.0 + 0.98 * 0.2)


def test_goodput_counts_only_requests_within_every_bound():
    records = trace()
    ttft_only = compute_metrics(records, 4.0, SloConfig(max_ttft_s=1.0))
    assert ttft_only["goodput_requests_per_s"] == pytest.approx(2 / 4)  # A and C
    assert ttft_only["slo_attainment"] == pytest.approx(2 / 3)
    with_tpot = compute_metrics(records, 4.0, SloConfig(max_ttft_s=1.0, max_tpot_s=0.3))
    assert with_tpot["goodput_requests_per_s"] == pytest.approx(1 / 4)  # C only
    with_e2e = compute_metrics(records, 4.0, SloConfig(max_ttft_s=None, max_e2e_s=2.0))
    assert with_e2e["goodput_requests_per_s"] == pytest.approx(2 / 4)  # A and C
    assert not meets_slo(records[3], SloConfig(max_ttft_s=None))


def test_no_completed_request_gives_nan_latencies_and_zero_rates():
    m = compute_metrics([RequestRecord(0.0, 1.0, [], error="x")], 1.0, SloConfig())
    assert m["num_errors"] == 1 and m["output_tokens_per_s"] == 0.0
    assert math.isnan(m["ttft_p99_s"]) and m["slo_attainment"] == 0.0
    assert compute_metrics([], 0.0, SloConfig())["requests_per_s"] == 0.0


def test_summarize_names_mean_and_percentiles():
    assert summarize("x", [1.0, 2.0, 3.0, 4.0, 5.0]) == {
        "x_mean_s": 3.0, "x_p50_s": 3.0, "x_p90_s": pytest.approx(4.6),
        "x_p99_s": pytest.approx(4.96)}


def test_pareto_front_keeps_points_no_other_beats():
    # (latency, throughput): index 2 is beaten by 0 (lower latency, more throughput),
    # index 3 is beaten by 1; 4 has a NaN latency.
    points = [(1.0, 10.0), (2.0, 30.0), (1.5, 5.0), (3.0, 20.0), (float("nan"), 99.0),
              (4.0, 40.0)]
    assert pareto_front(points) == [0, 1, 5]
    assert pareto_front([]) == []
