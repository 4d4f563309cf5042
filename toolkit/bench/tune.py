"""`toolkit tune`: sweep scheduler knobs, keep the configs that meet the SLO, pick the one
with the highest goodput, and write it as a recipe."""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from toolkit.bench.hardware import describe_hardware
from toolkit.bench.job import JobResult
from toolkit.bench.loadgen import ProgressFactory
from toolkit.bench.main import BenchRun, run_bench
from toolkit.bench.runtimes import RuntimePool
from toolkit.bench.sweep import (
    CONFIG_NAME,
    JobCheck,
    is_hydra_override,
    parse_overrides,
)
from toolkit.compose import compose_config
from toolkit.config import store
from toolkit.config.schema import BenchConfig, ToolkitConfig


class TuneError(RuntimeError):
    """No swept configuration met the SLO."""


@dataclass(frozen=True)
class TuneOutcome:
    run: BenchRun
    best: JobResult
    recipe_paths: list[Path]


def run_tune(overrides: list[str], pool: RuntimePool | None = None,
             progress: ProgressFactory | None = None,
             check: JobCheck | None = None) -> TuneOutcome:
    """Sweep the `KEY=a,b` overrides (or bench.tune.sweep when there are none) on top of
    the others as a Hydra multirun (a grid, or the search of hydra/sweeper=optuna), then
    write the winner as <sweep dir>/<bench.tune.recipe_name>.yaml (and into the recipes
    folder with bench.tune.install=true)."""
    parsed = parse_overrides(overrides)
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    base = [o.input_line for o in parsed if not o.is_sweep_override()]
    toolkit_base = [o.input_line for o in parsed
                    if not o.is_sweep_override() and not is_hydra_override(o)]
    tune = compose_config(toolkit_base, CONFIG_NAME).bench.tune
    run = run_bench(base + (sweeps or list(tune.sweep)), multirun=True, pool=pool,
                    progress=progress, check=check)
    best = pick_best(run.results, tune.min_slo_attainment)
    if best is None:
        attained = max((r.metrics["slo_attainment"] for r in run.results), default=0.0)
        raise TuneError(f"no configuration kept {tune.min_slo_attainment:.0%} of requests "
                        f"within the SLO (best: {attained:.0%}); see {run.output_dir}")
    config = compose_config(best.overrides, CONFIG_NAME)
    text = recipe_text(best, config, " ".join(shlex.quote(o) for o in overrides))
    folders = [run.output_dir] + ([store.recipes_dir()] if tune.install else [])
    paths = [folder / f"{tune.recipe_name}.yaml" for folder in folders]
    for path in paths:
        path.write_text(text)
    return TuneOutcome(run, best, paths)


def pick_best(results: list[JobResult], min_slo_attainment: float) -> JobResult | None:
    """The error-free job with the highest goodput (then output tokens/s) among those
    whose SLO attainment reaches `min_slo_attainment`; None when none does."""
    qualified = [r for r in results if r.metrics["num_errors"] == 0
                 and r.metrics["slo_attainment"] >= min_slo_attainment]
    return max(qualified, default=None, key=lambda r: (r.metrics["goodput_requests_per_s"],
                                                       r.metrics["output_tokens_per_s"]))


def recipe_text(best: JobResult, config: ToolkitConfig, arguments: str) -> str:
    """The recipe: header (purpose, hardware, command, figures), then the winner's group
    choices and values; the scheduler group is written in full."""
    name = config.bench.tune.recipe_name
    m = best.metrics
    header = [
        "# @package _global_",
        f"# Tuned by `toolkit tune`: highest goodput with >= "
        f"{config.bench.tune.min_slo_attainment:.0%} of requests within {_slo_text(config)}.",
        f"# Hardware: {describe_hardware()}",
        f"# Command: toolkit serve recipe={name}",
        f"# Tuned with: toolkit tune {arguments}".rstrip(),
        f"# Measured: goodput {m['goodput_requests_per_s']:.2f} req/s, "
        f"{m['output_tokens_per_s']:.1f} output tok/s, TTFT p50/p99 "
        f"{m['ttft_p50_s'] * 1000:.0f}/{m['ttft_p99_s'] * 1000:.0f} ms, "
        f"TPOT p50 {m['tpot_p50_s'] * 1000:.1f} ms, SLO met by {m['slo_attainment']:.0%}",
        f"#   on {_workload_text(config.bench)}.",
    ]
    return "\n".join(header) + "\n" + OmegaConf.to_yaml(recipe_body(best.overrides, config))


def recipe_body(overrides: list[str], config: ToolkitConfig) -> dict:
    """Defaults (a base recipe's, then `override /GROUP: NAME` for group choices) and the
    values of every non-bench key the overrides set, taken from the composed config."""
    groups = store.config_groups()
    defaults: dict[str, str] = {}
    values: dict = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key == store.RECIPE_GROUP:
            base = OmegaConf.to_container(OmegaConf.load(
                store.recipes_dir() / f"{override.value()}.yaml"))
            for entry in base.pop("defaults", []):
                for group, option in entry.items():
                    defaults.setdefault(group, option)
            values = _merge(base, values)
        elif key in groups:
            defaults[f"override /{key}"] = override.value()
        elif key.split(".")[0] != "bench":
            values = _merge(values, _nested(key, _lookup(config, key)))
    values = _merge(values, {"scheduler": asdict(config.scheduler)})
    if not defaults:
        return values
    return {"defaults": [{key: value} for key, value in defaults.items()], **values}


def _lookup(config: object, key: str) -> object:
    for part in key.split("."):
        config = getattr(config, part)
    return config


def _nested(key: str, value: object) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value  # type: ignore[return-value]


def _merge(base: dict, extra: dict) -> dict:
    return OmegaConf.to_container(OmegaConf.merge(base, extra))  # type: ignore[return-value]


def _slo_text(config: ToolkitConfig) -> str:
    slo = config.bench.slo
    bounds = [f"{label} <= {value} s" for label, value in
              (("TTFT", slo.max_ttft_s), ("TPOT", slo.max_tpot_s), ("E2E", slo.max_e2e_s))
              if value is not None]
    return "the SLO (" + ", ".join(bounds) + ")" if bounds else "no SLO"


def _workload_text(bench: BenchConfig) -> str:
    load = (f"{bench.request_rate} req/s Poisson" if bench.request_rate
            else f"concurrency {bench.max_concurrency or 'unbounded'}")
    return (f"workload={bench.workload}, {bench.num_requests} requests, prompt "
            f"{bench.prompt_len} words, output {bench.output_len} tokens, {load}")
