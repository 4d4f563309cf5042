"""A tiny real sweep (a Hydra multirun) on the in-process SmolLM2 engine: files, reuse of
the loaded model, and `tune` writing a recipe that composes."""

from __future__ import annotations

import json
import shutil

import pytest

from toolkit.bench.main import run_bench
from toolkit.bench.runtimes import RuntimePool
from toolkit.bench.tune import run_tune
from toolkit.compose import compose_config
from toolkit.config import store

pytestmark = pytest.mark.slow

# The session `runtime` fixture's overrides: jobs that match them reuse its loaded model.
ENGINE_OVERRIDES = ["device=cpu", "model.max_model_len=2048", "cache.num_pages=512"]
TINY = ["bench.num_requests=3", "bench.prompt_len=8", "bench.output_len=4",
        "bench.num_warmup=0", "bench.progress=false"]


def test_tiny_sweep_writes_results_summary_and_plot(runtime, tmp_path):
    pool = RuntimePool(runtime)
    run = run_bench([*ENGINE_OVERRIDES, *TINY, "scheduler.max_num_seqs=1,3",
                     f"bench.output_dir={tmp_path}"], multirun=True, pool=pool)
    assert pool.num_loads == 0
    assert run.axes == ["scheduler.max_num_seqs"]
    assert [r.name for r in run.results] == ["0", "1"]
    for result, seqs in zip(run.results, (1, 3)):
        saved = json.loads((tmp_path / result.name / "results.json").read_text())
        assert saved["axes"] == {"scheduler.max_num_seqs": str(seqs)}
        assert saved["metrics"]["num_completed"] == 3
        assert saved["metrics"]["num_output_tokens"] == 12  # ignore_eos: exactly 4 each
        assert f"max_num_seqs: {seqs}\n" in (tmp_path / result.name / "config.yaml").read_text()
    summary = (tmp_path / "summary.md").read_text()
    assert "| job | scheduler.max_num_seqs | req/s |" in summary
    assert "| 0 | 1 |" in summary and "| 1 | 3 |" in summary
    assert len((tmp_path / "summary.csv").read_text().splitlines()) == 3
    png = tmp_path / "plot_scheduler.max_num_seqs.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tune_picks_the_best_and_writes_a_recipe_that_composes(runtime, tmp_path,
                                                               monkeypatch):
    recipes = tmp_path / "recipes"
    shutil.copytree(store.recipes_dir(), recipes)
    monkeypatch.setattr(store, "recipes_dir", lambda: recipes)
    outcome = run_tune([*ENGINE_OVERRIDES, *TINY, "scheduler.max_num_seqs=1,3",
                        "bench.slo.max_ttft_s=120", "bench.tune.install=true",
                        f"bench.output_dir={tmp_path / 'out'}"], pool=RuntimePool(runtime))
    goodputs = [r.metrics["goodput_requests_per_s"] for r in outcome.run.results]
    assert outcome.best.metrics["goodput_requests_per_s"] == max(goodputs)
    assert outcome.recipe_paths == [tmp_path / "out" / "tuned.yaml", recipes / "tuned.yaml"]
    text = (recipes / "tuned.yaml").read_text()
    assert text.startswith("# @package _global_\n# Tuned by `toolkit tune`")
    assert "# Command: toolkit serve recipe=tuned\n" in text and "# Measured: goodput" in text
    tuned = compose_config(["recipe=tuned"])
    best_config = compose_config(outcome.best.overrides, "bench")
    assert tuned.scheduler == best_config.scheduler
    assert (tuned.device.device, tuned.model.max_model_len, tuned.cache.num_pages) == (
        "cpu", 2048, 512)
