"""`toolkit bench -m` and `toolkit tune` as Hydra multiruns through hydra.main, on a tiny
random checkpoint: the sweep dir, hydra.job.chdir, the joblib launcher and the Optuna
sweeper (TPE and a Pareto search), and the one-line refusals."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import yaml
from tiny_model import tiny_overrides
from typer.testing import CliRunner

from toolkit.bench.main import run_bench
from toolkit.bench.runtimes import RuntimePool
from toolkit.bench.sweep import metric_direction, plan_sweep
from toolkit.bench.tune import run_tune
from toolkit.cli.main import app
from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def has_plugin(module: str) -> bool:
    return importlib.util.find_spec(f"hydra_plugins.{module}") is not None


needs_joblib = pytest.mark.skipif(not has_plugin("hydra_joblib_launcher"),
                                  reason="hydra-joblib-launcher is not installed")
needs_optuna = pytest.mark.skipif(not has_plugin("hydra_optuna_sweeper"),
                                  reason="hydra-optuna-sweeper (the sweep extra) is not "
                                  "installed")


def job_dirs(sweep_dir):
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir())


def test_grid_writes_every_job_under_the_sweep_dir_with_chdir(tiny_model_dir, tmp_path,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    pool = RuntimePool()
    sweep_dir = tmp_path / "sweep"
    run = run_bench([*tiny_overrides(tiny_model_dir), "scheduler.max_num_seqs=1,4",
                     "hydra.job.chdir=true", "hydra.sweep.dir=sweep"], multirun=True,
                    pool=pool)
    assert os.getcwd() == str(tmp_path)  # Hydra went into each job's dir and back
    assert pool.num_loads == 1  # the second job rebuilt only the engine
    assert run.output_dir == sweep_dir and run.axes == ["scheduler.max_num_seqs"]
    assert [r.axes for r in run.results] == [{"scheduler.max_num_seqs": "1"},
                                             {"scheduler.max_num_seqs": "4"}]
    assert [p.name for p in job_dirs(sweep_dir)] == ["0", "1"]
    for job_dir, seqs in zip(job_dirs(sweep_dir), (1, 4)):
        result = json.loads((job_dir / "results.json").read_text())
        assert result["metrics"]["num_output_tokens"] == 4 * 3  # ignore_eos
        hydra_cfg = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert f"scheduler.max_num_seqs={seqs}" in hydra_cfg["overrides"]["task"]
        assert hydra_cfg["job"]["chdir"] is True
    assert (sweep_dir / "multirun.yaml").exists()
    assert "| job | scheduler.max_num_seqs |" in (sweep_dir / "summary.md").read_text()
    assert (sweep_dir / "plot_scheduler.max_num_seqs.png").read_bytes()[:8] == PNG


def test_bench_output_dir_places_the_sweep(tiny_model_dir, tmp_path):
    run = run_bench([*tiny_overrides(tiny_model_dir), "bench.num_requests=1",
                     f"bench.output_dir={tmp_path}"], multirun=True)
    assert run.output_dir == tmp_path and [r.name for r in run.results] == ["0"]
    assert (tmp_path / "0" / "results.json").exists() and (tmp_path / "plot.png").exists()


@needs_joblib
def test_joblib_launcher_runs_the_sweep_from_the_cli(tiny_model_dir, tmp_path):
    result = runner.invoke(app, ["bench", "-m", "hydra/launcher=joblib",
                                 "hydra.launcher.n_jobs=2", "scheduler.max_num_seqs=4,16",
                                 f"hydra.sweep.dir={tmp_path}",
                                 *tiny_overrides(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert f"results: {tmp_path}" in result.stdout
    for job_dir in job_dirs(tmp_path):
        hydra_cfg = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra_cfg["launcher"]["_target_"].endswith("JoblibLauncher")
        metrics = json.loads((job_dir / "results.json").read_text())["metrics"]
        assert metrics["num_completed"] == 4 and metrics["num_errors"] == 0
    assert len(job_dirs(tmp_path)) == 2
    assert (tmp_path / "summary.csv").read_text().count("\n") == 3
    assert (tmp_path / "plot_scheduler.max_num_seqs.png").read_bytes()[:8] == PNG


@needs_optuna
def test_tune_searches_with_optuna_tpe_and_writes_a_recipe(tiny_model_dir, tmp_path):
    outcome = run_tune([*tiny_overrides(tiny_model_dir), "hydra/sweeper=optuna",
                        "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=0",
                        "scheduler.max_num_seqs=range(1,9)", "bench.slo.max_ttft_s=60",
                        f"hydra.sweep.dir={tmp_path}"])
    assert len(outcome.run.results) == 3 == len(job_dirs(tmp_path))
    study = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    goodputs = [r.metrics["goodput_requests_per_s"] for r in outcome.run.results]
    assert study["best_value"] == pytest.approx(max(goodputs))  # maximized, not minimized
    assert outcome.best.metrics["goodput_requests_per_s"] == max(goodputs)
    assert outcome.recipe_paths == [tmp_path / "tuned.yaml"]
    text = (tmp_path / "tuned.yaml").read_text()
    assert "'scheduler.max_num_seqs=range(1,9)'" in text
    seqs = int(outcome.best.axes["scheduler.max_num_seqs"])
    assert study["best_params"] == {"scheduler.max_num_seqs": seqs}
    assert compose_config(outcome.best.overrides, "bench").scheduler.max_num_seqs == seqs


@needs_optuna
def test_tune_pareto_search_over_throughput_and_latency(tiny_model_dir, tmp_path):
    outcome = run_tune([*tiny_overrides(tiny_model_dir), "hydra/sweeper=optuna",
                        "hydra.sweeper.n_trials=3", "hydra/sweeper/sampler=nsgaii",
                        "hydra.sweeper.sampler.seed=0",
                        "bench.tune.objectives=[output_tokens_per_s,ttft_p99_s]",
                        "scheduler.max_num_seqs=1,2,4,8", "bench.slo.max_ttft_s=60",
                        f"hydra.sweep.dir={tmp_path}"])
    hydra_cfg = yaml.safe_load((tmp_path / "0" / ".hydra" / "hydra.yaml").read_text())
    assert hydra_cfg["hydra"]["sweeper"]["direction"] == ["maximize", "minimize"]
    front = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())["solutions"]
    points = {(r.metrics["output_tokens_per_s"], r.metrics["ttft_p99_s"])
              for r in outcome.run.results}
    assert front and all(tuple(s["values"]) in points for s in front)
    for solution in front:  # nothing measured beats a Pareto solution on both
        tps, ttft = solution["values"]
        assert not any(p[0] > tps and p[1] < ttft for p in points)
    assert (tmp_path / "tuned.yaml").exists()


def test_a_missing_plugin_is_refused_with_the_install_line(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None
                        if name.startswith("hydra_plugins.") else real_find_spec(name, *a))
    result = runner.invoke(app, ["bench", "-m", "hydra/launcher=joblib",
                                 "scheduler.max_num_seqs=4,16", f"hydra.sweep.dir={tmp_path}"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: hydra/launcher=joblib needs the sweep extra: pip install -e '.[sweep]'"]
    with pytest.raises(ConfigError, match=r"^hydra/sweeper=optuna needs the sweep extra"):
        run_tune(["hydra/sweeper=optuna"])
    with pytest.raises(ConfigError, match=r"needs pip install hydra-ray-launcher$"):
        plan_sweep(["hydra/launcher=ray"])


@pytest.mark.parametrize("overrides, message", [
    (["scheduler.max_num_seq=4,16"], "unknown key 'scheduler.max_num_seq' (did you mean "
                                     "scheduler.max_num_seqs?)"),
    (["scheduler.max_num_seqs=4,0"], "scheduler.max_num_seqs=0 must be >= 1"),
    (["model=smollm2,gpt5"], "unknown model 'gpt5'"),
    (["hydra.sweep.dirr=x"], "Could not override 'hydra.sweep.dirr'"),
    (["hydra/launcher=nope"], "Could not find 'hydra/launcher/nope'"),
    (["hydra.job.chdir=true,false"], "hydra.job.chdir=true,false: Hydra's own settings take "
                                     "one value"),
    (["bench.tune.objectives=[goodput]"], "unknown bench.tune.objectives entry 'goodput'"),
    pytest.param(["hydra/sweeper=optuna", "hydra.sweeper.params.x='range(1,4)'"],
                 "Hydra could not apply hydra/sweeper=optuna hydra.sweeper.params.x=",
                 marks=needs_optuna),
])
def test_bad_sweeps_fail_in_one_line_before_anything_runs(overrides, message):
    with pytest.raises(ConfigError) as info:
        plan_sweep(overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_hydra_keys_need_a_multirun():
    result = runner.invoke(app, ["bench", "hydra.sweep.dir=x"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: hydra.sweep.dir=x: hydra.* keys and hydra/ "
                                     "groups apply to a sweep: toolkit bench -m ...")


def test_objective_directions():
    assert [metric_direction(k) for k in ("goodput_requests_per_s", "output_tokens_per_s",
                                          "slo_attainment", "ttft_p99_s", "e2e_p50_s",
                                          "num_errors")] == [
        "maximize", "maximize", "maximize", "minimize", "minimize", "minimize"]


@pytest.mark.parametrize("command", [["bench", "-m"], ["tune"]])
def test_a_missing_model_fails_in_one_line_before_hydra_starts(command, tmp_path):
    result = runner.invoke(app, [*command, f"model.path={tmp_path / 'nowhere'}", "device=cpu",
                                 "scheduler.max_num_seqs=1,2",
                                 f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: model.path {tmp_path / 'nowhere'} is not a model directory (no config.json)"]
    assert not (tmp_path / "sweep").exists()
