"""`toolkit bench`: a run or a Hydra-multirun sweep of runs, then the summary and plots.

Sweeps are expanded with Hydra's own override parser and BasicSweeper (the cartesian
product of every `KEY=a,b,...`); each job is composed through compose_config("bench"), so
every job is validated before any model loads.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from toolkit.bench.job import JobResult, run_job
from toolkit.bench.runtimes import RuntimePool
from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError
from toolkit.config.schema import ToolkitConfig

logger = logging.getLogger(__name__)
CONFIG_NAME = "bench"


@dataclass(frozen=True)
class Job:
    """One composed job of a sweep."""

    name: str
    overrides: list[str]
    axes: dict[str, str]
    config: ToolkitConfig


@dataclass(frozen=True)
class BenchRun:
    """A finished `toolkit bench`: where it wrote and what each job measured."""

    output_dir: Path
    axes: list[str]
    jobs: list[Job]
    results: list[JobResult]


def run_bench(overrides: list[str], multirun: bool = False,
              pool: RuntimePool | None = None) -> BenchRun:
    """Compose every job, run them in order (reusing the model where allowed), and write
    results.json per job plus summary.md, summary.csv and plots for the whole run."""
    from toolkit.bench.plots import write_plots
    from toolkit.bench.report import write_summary

    jobs, axes = plan_jobs(overrides, multirun)
    output_dir = output_root(jobs[0].config)
    pool = pool or RuntimePool()
    results = []
    for index, job in enumerate(jobs):
        logger.info("job %d/%d: %s", index + 1, len(jobs), " ".join(job.overrides) or "defaults")
        results.append(run_job(job.config, output_dir / job.name, job.name, job.overrides,
                               job.axes, pool))
    write_summary(output_dir, results, axes)
    write_plots(output_dir, results, axes)
    return BenchRun(output_dir, axes, jobs, results)


def plan_jobs(overrides: list[str], multirun: bool) -> tuple[list[Job], list[str]]:
    """The composed jobs and the swept keys (axes); without multirun, one job."""
    if not multirun:
        return [Job("00", list(overrides), {}, compose_config(overrides, CONFIG_NAME))], []
    job_overrides, axes = expand_sweep(overrides)
    jobs = []
    for index, job in enumerate(job_overrides):
        values = dict(o.split("=", 1) for o in job if o.split("=", 1)[0] in axes)
        jobs.append(Job(_job_name(index, values), job, values, compose_config(job, CONFIG_NAME)))
    return jobs, axes


def expand_sweep(overrides: list[str]) -> tuple[list[list[str]], list[str]]:
    """Every job's override list (the cartesian product of the sweeps) and the swept keys."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    except HydraException as exc:
        raise ConfigError(str(exc).strip().splitlines()[0]) from None
    axes = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    return [list(job) for batch in batches for job in batch], axes


def output_root(cfg: ToolkitConfig) -> Path:
    """bench.output_dir, or outputs/bench/<timestamp> under the working directory."""
    if cfg.bench.output_dir:
        return Path(cfg.bench.output_dir)
    return Path("outputs") / "bench" / time.strftime("%Y-%m-%d_%H-%M-%S")


def _job_name(index: int, values: dict[str, str]) -> str:
    label = ",".join(f"{key.split('.')[-1]}={value}" for key, value in values.items())
    label = re.sub(r"[^A-Za-z0-9._=,-]", "_", label)
    return f"{index:02d}_{label}" if label else f"{index:02d}"
