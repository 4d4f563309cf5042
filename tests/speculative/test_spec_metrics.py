"""Acceptance counters in EngineMetrics and their Prometheus rendering."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from toolkit.api.http.metrics import render_metrics
from toolkit.engine.metrics import EngineMetrics


def test_acceptance_rate_and_mean_accepted_length():
    metrics = EngineMetrics()
    assert metrics.acceptance_rate == 0.0 and metrics.mean_accepted_length == 0.0
    metrics.on_verify(4, 4)
    metrics.on_verify(4, 0)
    metrics.on_verify(2, 1)
    assert metrics.acceptance_rate == pytest.approx(5 / 10)
    assert metrics.mean_accepted_length == pytest.approx(1 + 5 / 3)


def test_metrics_endpoint_renders_speculative_figures():
    metrics = EngineMetrics()
    metrics.on_verify(4, 3)
    stats = {"num_running": 0, "num_waiting": 0, "kv_cache_usage": 0.0}
    ctx = SimpleNamespace(model_name="m", engine=SimpleNamespace(stats=lambda: stats,
                                                                 metrics=metrics))
    text = render_metrics(ctx)
    assert 'vllm:spec_decode_num_drafts_total{model_name="m"} 1.0' in text
    assert 'vllm:spec_decode_num_draft_tokens_total{model_name="m"} 4.0' in text
    assert 'vllm:spec_decode_num_accepted_tokens_total{model_name="m"} 3.0' in text
    assert 'toolkit:spec_decode_acceptance_rate{model_name="m"} 0.75' in text
    assert 'toolkit:spec_decode_mean_accepted_length{model_name="m"} 4.0' in text
    assert "# TYPE toolkit:spec_decode_acceptance_rate gauge" in text
    assert "# TYPE vllm:spec_decode_num_accepted_tokens_total counter" in text
