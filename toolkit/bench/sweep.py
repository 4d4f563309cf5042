"""`toolkit bench -m`: a Hydra multirun through Hydra's own entry point (`hydra.main`).

Hydra composes every job; its sweeper (the basic grid, or a plugin such as
hydra/sweeper=optuna) chooses the jobs and its launcher (in-process, or a plugin such as
hydra/launcher=joblib) runs them, so `hydra.sweep.dir`, `hydra.job.chdir` and every
`hydra.*` key work as Hydra users know them. Each job writes results.json into its own
Hydra output dir under the sweep dir and returns its `bench.tune.objectives` to the
sweeper; the caller reads the jobs' results back from the sweep dir.

Before Hydra starts, every override is checked (keys, group options, plugins present), and
a grid sweep composes each of its jobs, so a bad one fails in one line before any model
loads.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override, RangeSweep
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from toolkit.bench.job import RESULTS_FILE, JobResult, run_job
from toolkit.bench.loadgen import ProgressFactory
from toolkit.bench.metrics import metric_keys
from toolkit.bench.runtimes import RuntimePool, weights_key
from toolkit.compose import check_overrides, compose_config
from toolkit.config.errors import ConfigError
from toolkit.config.schema import ToolkitConfig
from toolkit.config.store import conf_dir, config_groups, register_configs

logger = logging.getLogger(__name__)
CONFIG_NAME = "bench"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
"""The `_target_` Hydra's config names for its grid sweeper (a string compare only)."""

SWEEP_EXTRA = "the sweep extra: pip install -e '.[sweep]'"
PLUGINS = {
    ("hydra/launcher", "joblib"): ("hydra_joblib_launcher", SWEEP_EXTRA),
    ("hydra/sweeper", "optuna"): ("hydra_optuna_sweeper", SWEEP_EXTRA),
    ("hydra/launcher", "ray"): ("hydra_ray_launcher", "pip install hydra-ray-launcher"),
    ("hydra/launcher", "rq"): ("hydra_rq_launcher", "pip install hydra-rq-launcher"),
    ("hydra/launcher", "submitit_local"): ("hydra_submitit_launcher",
                                           "pip install hydra-submitit-launcher"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_submitit_launcher",
                                           "pip install hydra-submitit-launcher"),
    ("hydra/sweeper", "ax"): ("hydra_ax_sweeper", "pip install hydra-ax-sweeper"),
    ("hydra/sweeper", "nevergrad"): ("hydra_nevergrad_sweeper",
                                     "pip install hydra-nevergrad-sweeper"),
}
"""(group, option) -> (module under hydra_plugins, how to install it)."""
JobCheck = Callable[[ToolkitConfig], None]
"""Vets a composed job before anything runs (raises a one-line error)."""


class SweepError(RuntimeError):
    """Hydra stopped the sweep (a job failed); Hydra has printed why."""


@dataclass(frozen=True)
class SweepPlan:
    """A checked `toolkit bench -m` command line, ready for Hydra."""

    overrides: list[str]
    """Every override, Hydra's and toolkit's, as typed."""
    sweep_dir: Path
    """Where Hydra writes the jobs (absolute); the summary goes here too."""
    axes: list[str]
    """The swept toolkit keys, in command-line order."""
    num_jobs: int | None
    """The job count of a grid sweep; None when a searching sweeper decides."""


def is_hydra_override(override: Override) -> bool:
    """`hydra.KEY=...` or `hydra/GROUP=...`: Hydra's own settings."""
    key = override.key_or_group
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def parse_overrides(overrides: list[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(str(exc).strip().splitlines()[0]) from None


def plan_sweep(overrides: list[str], check: JobCheck | None = None) -> SweepPlan:
    """Check the command line and work out the sweep dir, the axes and (for a grid) every
    job's composed config; a ConfigError names the first bad override. ``check`` vets
    the composed configs once per distinct model set-up (the CLI checks the model's
    presence and fit there, before Hydra starts)."""
    parsed = parse_overrides(overrides)
    hydra_side = [o for o in parsed if is_hydra_override(o)]
    sweeps = [o for o in parsed if not is_hydra_override(o) and o.is_sweep_override()]
    fixed = [o.input_line for o in parsed if not is_hydra_override(o)
             and not o.is_sweep_override()]
    check_plugins(hydra_side)
    check_overrides(fixed)
    for sweep in sweeps:
        check_sweep(sweep)
    composed = compose_with_hydra([o.input_line for o in hydra_side], fixed)
    check_objectives(list(composed.bench.tune.objectives))
    sweeper_params = composed.hydra.sweeper.get("params") or {}
    check_overrides([f"{key}=null" for key in sweeper_params if key not in config_groups()])
    axes = [o.key_or_group for o in sweeps]
    axes += [key for key in sweeper_params if key not in axes]
    num_jobs = None
    if composed.hydra.sweeper._target_ == BASIC_SWEEPER:
        num_jobs = check_grid(parsed, check)
    elif check is not None:
        check(compose_config(fixed, CONFIG_NAME))
    return SweepPlan([*overrides, *sweeper_directions(hydra_side, composed)],
                     sweep_dir(hydra_side, composed), axes, num_jobs)


def sweeper_directions(hydra_side: list[Override], composed: DictConfig) -> list[str]:
    """For a searching sweeper that takes `hydra.sweeper.direction` (optuna) and was given
    none: each objective's own direction (throughputs up, latencies down)."""
    if "direction" not in composed.hydra.sweeper or any(
            o.key_or_group == "hydra.sweeper.direction" for o in hydra_side):
        return []
    objectives = list(composed.bench.tune.objectives)
    return [f"hydra.sweeper.direction=[{','.join(map(metric_direction, objectives))}]"]


def metric_direction(key: str) -> str:
    """minimize for latencies, durations and error counts; maximize for the rest."""
    lower_is_better = (key.endswith("_s") and not key.endswith("_per_s")) or key in (
        "num_errors",)
    return "minimize" if lower_is_better else "maximize"


def check_plugins(hydra_side: list[Override]) -> None:
    """A launcher or sweeper plugin that is not installed: one line with how to get it."""
    for override in hydra_side:
        if override.is_sweep_override():
            raise ConfigError(f"{override.input_line}: Hydra's own settings take one value")
        plugin = PLUGINS.get((override.key_or_group, str(override.value())))
        if plugin is None:
            continue
        module, install = plugin
        if importlib.util.find_spec(f"hydra_plugins.{module}") is None:
            raise ConfigError(f"{override.input_line} needs {install}")


def check_sweep(sweep: Override) -> None:
    """Every value of a `KEY=a,b` or `KEY=range(...)` sweep, and the key of any other."""
    if isinstance(sweep.value(), (ChoiceSweep, RangeSweep)):
        check_overrides([f"{sweep.get_key_element()}={value}"
                         for value in sweep.sweep_string_iterator()])
    elif sweep.key_or_group not in config_groups():
        check_overrides([f"{sweep.get_key_element()}=null"])


def check_objectives(objectives: list[str]) -> None:
    valid = metric_keys()
    for key in objectives:
        if key not in valid:
            raise ConfigError(f"unknown bench.tune.objectives entry {key!r}; valid metrics: "
                              f"{', '.join(valid)}")
    if not objectives:
        raise ConfigError("bench.tune.objectives is empty; name at least one metric")


def check_grid(parsed: list[Override], check: JobCheck | None = None) -> int:
    """Compose and validate every job of a grid sweep (the cartesian product of its
    `KEY=a,b` sweeps, as Hydra's basic sweeper runs it), and ``check`` each distinct
    model set-up among them; the job count."""
    choices = []
    for override in parsed:
        if is_hydra_override(override):
            continue
        if not override.is_sweep_override():
            choices.append([override.input_line])
        elif isinstance(override.value(), (ChoiceSweep, RangeSweep)):
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            return 0  # a glob or interval sweep: Hydra expands or refuses it
    jobs = [list(job) for job in itertools.product(*choices)]
    checked = set()
    for job in jobs:
        cfg = compose_config(job, CONFIG_NAME)
        if check is not None and weights_key(cfg) not in checked:
            check(cfg)
            checked.add(weights_key(cfg))
    return len(jobs)


def compose_with_hydra(hydra_overrides: list[str], fixed: list[str]) -> DictConfig:
    """The bench config with its `hydra` node, composed with the Hydra overrides (a bad
    Hydra key or plugin option fails here, in one line)."""
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            cfg = compose(CONFIG_NAME, overrides=[*hydra_overrides, *fixed],
                          return_hydra_config=True)
        OmegaConf.resolve(cfg.hydra.sweep)
        return cfg
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(str(exc).strip().splitlines()[0]) from None
    except (AssertionError, AttributeError, TypeError, ValueError) as exc:
        # OmegaConf can fail this way merging into a null node (hydra.sweeper.params=...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"Hydra could not apply {' '.join(hydra_overrides)}: {first} "
                          "(set dict-valued Hydra keys in a config file)") from None
    finally:
        GlobalHydra.instance().clear()


def sweep_dir(hydra_side: list[Override], composed: DictConfig) -> Path:
    """hydra.sweep.dir as given, else bench.output_dir, else the config's default
    (outputs/bench/<timestamp>); absolute."""
    given = any(o.key_or_group == "hydra.sweep.dir" for o in hydra_side)
    if not given and composed.bench.output_dir:
        return Path(composed.bench.output_dir).absolute()
    return Path(str(composed.hydra.sweep.dir)).absolute()


def run_sweep(plan: SweepPlan, pool: RuntimePool | None = None,
              progress: ProgressFactory | None = None) -> list[JobResult]:
    """Run the plan through `hydra.main` (multirun) and read back every job's results, in
    job order."""
    started = time.time()
    job = make_job_function(plan.axes, pool or RuntimePool(), progress, plan.num_jobs)
    entry = _hydra_entry(job)
    argv = [sys.argv[0] or "toolkit", "--multirun", *plan.overrides,
            f"hydra.sweep.dir={_quote(str(plan.sweep_dir))}"]
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with _argv(argv):
            entry()
    except SystemExit as exc:
        if exc.code:
            raise SweepError("the sweep stopped; Hydra printed why above") from None
    finally:
        GlobalHydra.instance().clear()
    return collect_results(plan.sweep_dir, since=started)


def make_job_function(axes: list[str], pool: RuntimePool, progress: ProgressFactory | None,
                      num_jobs: int | None) -> Callable[[DictConfig], object]:
    """The task function Hydra runs per job (picklable: a launcher may run it in another
    process, where `pool` starts empty)."""

    def bench_job(cfg: DictConfig) -> float | tuple[float, ...]:
        from hydra.core.hydra_config import HydraConfig

        from toolkit.resolve import validate

        _standard_start_method()
        hydra_cfg = HydraConfig.get()
        job_dir = Path(hydra_cfg.runtime.output_dir)
        overrides = list(hydra_cfg.overrides.task)
        values = {o.key_or_group: o.get_value_element_as_str()
                  for o in parse_overrides(overrides) if o.key_or_group in axes}
        config = OmegaConf.to_object(cfg)
        validate(config)
        count = f"{hydra_cfg.job.num + 1}/{num_jobs}" if num_jobs else f"{hydra_cfg.job.num + 1}"
        logger.info("job %s (%s): %s", job_dir.name, count,
                    " ".join(f"{k}={v}" for k, v in values.items()) or "defaults")
        result = run_job(config, job_dir, job_dir.name, overrides, values, pool, progress)
        objectives = [float(result.metrics.get(key, float("nan")))
                      for key in config.bench.tune.objectives]
        return objectives[0] if len(objectives) == 1 else tuple(objectives)

    return bench_job


def _standard_start_method() -> None:
    """In a joblib (loky) worker the process start method reads "loky", which the
    processes the runtime starts (the grammar compile workers) cannot set up; give them
    the platform's default back."""
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) == "loky":
        multiprocessing.set_start_method(None, force=True)


def collect_results(directory: Path, since: float) -> list[JobResult]:
    """The results.json of every job under ``directory`` written after ``since`` (a sweep
    dir reused by an earlier run keeps its old jobs out), in job order."""
    paths = [p for p in directory.glob(f"*/{RESULTS_FILE}") if p.stat().st_mtime >= since - 1]
    paths.sort(key=lambda p: (not p.parent.name.isdigit(), int(p.parent.name)
                              if p.parent.name.isdigit() else 0, p.parent.name))
    return [JobResult.from_dict(json.loads(p.read_text())) for p in paths]


def _hydra_entry(job: Callable[[DictConfig], object]) -> Callable[[], None]:
    import hydra

    return hydra.main(config_path=str(conf_dir()), config_name=CONFIG_NAME,
                      version_base="1.3")(job)


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    """hydra.main reads its command line from sys.argv."""
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def _quote(value: str) -> str:
    """A Hydra override value that keeps spaces and `=` (single-quoted)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
