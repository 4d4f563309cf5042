"""The roofline of a bench report: a model's cost per token from its checkpoint, the bound
that applies to a job, and the section the report writes."""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from tiny_model import tiny_overrides

from toolkit.bench.main import run_bench
from toolkit.bench.records import RequestRecord
from toolkit.bench.roofline import (
    MachineLimits,
    bound,
    markdown_roofline,
    measure_machine,
    model_cost,
    peak_concurrency,
)


def _linear_weights(model: torch.nn.Module) -> int:
    """What the roofline must count: every nn.Linear's weight (the LM head included)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("tied", [False, True])
def test_model_cost_counts_every_linear_and_the_head_once(tmp_path, tied):
    config = transformers.LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=80, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(tmp_path)
    cost = model_cost(tmp_path, "none", "bfloat16")
    assert cost.num_matmul_weights == _linear_weights(model)
    assert cost.flops_per_token == 2 * _linear_weights(model)
    assert cost.weight_bytes == 2 * _linear_weights(model)
    assert model_cost(tmp_path, "none", "float32").weight_bytes == 4 * _linear_weights(model)
    assert model_cost(tmp_path, "q4_1", "bfloat16").weight_bytes == pytest.approx(
        _linear_weights(model) * 20 / 32)


def _record(start: float, end: float, num_output: int = 4) -> RequestRecord:
    return RequestRecord(start, end, [start + 0.1], 8, num_output)


def test_peak_concurrency_is_the_most_requests_in_flight():
    assert peak_concurrency([]) == 0
    assert peak_concurrency([_record(0, 1), _record(1, 2), _record(2, 3)]) == 1  # back to back
    assert peak_concurrency([_record(0, 4), _record(1, 2), _record(1.5, 5), _record(4.5, 6)]) == 3


LIMITS = MachineLimits(gemm_gflops=800.0, dram_gbps=40.0, num_threads=2)


def test_one_stream_is_bounded_by_bandwidth_and_many_by_compute():
    metrics = {"peak_concurrency": 1, "model_flops_per_token": 2e8,
               "model_weight_bytes": 2e8, "output_tokens_per_s": 50.0,
               "total_tokens_per_s": 400.0}
    kind, limit, fraction = bound(metrics, LIMITS)
    assert (kind, limit, fraction) == ("bandwidth", pytest.approx(200.0), pytest.approx(0.25))
    kind, limit, fraction = bound({**metrics, "peak_concurrency": 16}, LIMITS)
    assert (kind, limit, fraction) == ("compute", pytest.approx(4000.0), pytest.approx(0.1))
    assert bound({**metrics, "model_flops_per_token": 0.0}, LIMITS) is None


def test_the_section_names_the_limits_and_each_jobs_bound():
    metrics = {"peak_concurrency": 16, "model_flops_per_token": 2e8, "model_weight_bytes": 2e8,
               "output_tokens_per_s": 100.0, "total_tokens_per_s": 400.0}
    section = markdown_roofline(LIMITS, [("00", metrics), ("01", {**metrics,
                                                                  "model_flops_per_token": 0})])
    assert "bf16 GEMM peak 800 GFLOP/s, DRAM read 40.0 GB/s" in section
    assert "| 00 | 16 | 0.200 | 200 | compute | 4000 | 400.0 | 10.0 |" in section
    assert "| 01 | 16 | - |" in section


def test_the_machine_measure_gives_finite_positive_limits():
    limits = measure_machine(num_threads=1, repeats=1)
    assert limits.num_threads == 1
    assert math.isfinite(limits.gemm_gflops) and limits.gemm_gflops > 0
    assert math.isfinite(limits.dram_gbps) and limits.dram_gbps > 0


def test_a_bench_run_reports_its_roofline(tiny_model_dir, tmp_path):
    run = run_bench([*tiny_overrides(tiny_model_dir), "bench.max_concurrency=2",
                     f"bench.output_dir={tmp_path}"])
    metrics = run.results[0].metrics
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert metrics["model_flops_per_token"] == 2 * _linear_weights(model)
    assert metrics["model_weight_bytes"] == 4 * _linear_weights(model)  # float32
    assert metrics["peak_concurrency"] == 2
    summary = (tmp_path / "summary.md").read_text()
    assert "## Roofline" in summary and "| 00 | 2 |" in summary and "compute" in summary


def test_the_roofline_can_be_left_out(tiny_model_dir, tmp_path):
    run = run_bench([*tiny_overrides(tiny_model_dir), "bench.roofline=false",
                     f"bench.output_dir={tmp_path}"])
    assert "peak_concurrency" not in run.results[0].metrics
    assert "## Roofline" not in (tmp_path / "summary.md").read_text()
