"""`toolkit bench`: one run, or a Hydra multirun sweep of runs (toolkit.bench.sweep), then
the summary and plots over all of its jobs."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.bench.job import JobResult, run_job
from toolkit.bench.loadgen import ProgressFactory
from toolkit.bench.roofline import ROOFLINE_KEYS, measure_machine
from toolkit.bench.runtimes import RuntimePool
from toolkit.bench.sweep import (
    CONFIG_NAME,
    JobCheck,
    is_hydra_override,
    parse_overrides,
    plan_sweep,
    run_sweep,
)
from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError
from toolkit.config.schema import ToolkitConfig

logger = logging.getLogger(__name__)
SINGLE_JOB = "00"


@dataclass(frozen=True)
class BenchRun:
    """A finished `toolkit bench`: where it wrote and what each job measured."""

    output_dir: Path
    axes: list[str]
    results: list[JobResult]


def run_bench(overrides: list[str], multirun: bool = False, pool: RuntimePool | None = None,
              progress: ProgressFactory | None = None, check: JobCheck | None = None
              ) -> BenchRun:
    """One job (results in <output_dir>/00), or with ``multirun`` a Hydra multirun whose
    jobs write into hydra.sweep.dir; then summary.md, summary.csv and plots for all of
    them in that directory. ``check`` vets the composed jobs before any runs."""
    from toolkit.bench.plots import write_plots
    from toolkit.bench.report import write_summary

    if multirun:
        plan = plan_sweep(overrides, check)
        output_dir, axes = plan.sweep_dir, plan.axes
        results = run_sweep(plan, pool, progress)
    else:
        cfg = single_job_config(overrides)
        if check is not None:
            check(cfg)
        output_dir, axes = output_root(cfg), []
        results = [run_job(cfg, output_dir / SINGLE_JOB, SINGLE_JOB, list(overrides), {},
                           pool or RuntimePool(), progress)]
    limits = measure_machine() if any(ROOFLINE_KEYS[0] in r.metrics for r in results) else None
    write_summary(output_dir, results, axes, limits)
    write_plots(output_dir, results, axes)
    return BenchRun(output_dir, axes, results)


def single_job_config(overrides: list[str]) -> ToolkitConfig:
    """The composed config of a run without -m; Hydra's own keys need a multirun."""
    for override in parse_overrides(overrides):
        if is_hydra_override(override):
            raise ConfigError(f"{override.input_line}: hydra.* keys and hydra/ groups apply "
                              "to a sweep: toolkit bench -m ...")
    return compose_config(overrides, CONFIG_NAME)


def output_root(cfg: ToolkitConfig) -> Path:
    """bench.output_dir, or outputs/bench/<timestamp> under the working directory."""
    if cfg.bench.output_dir:
        return Path(cfg.bench.output_dir)
    return Path("outputs") / "bench" / time.strftime("%Y-%m-%d_%H-%M-%S")
