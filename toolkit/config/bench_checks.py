"""Value checks of the `bench` config group, run at compose time by config.resolve.validate.

Each failure is a ConfigError whose one line names the key, the bad value and what is valid.
"""

from __future__ import annotations

import re

from toolkit.config.errors import ConfigError
from toolkit.config.schema import BenchConfig

WORKLOADS = ("random", "chat", "shared_prefix")
LEN_DISTS = ("uniform", "normal")
RECIPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def validate_bench(cfg: BenchConfig) -> None:
    """Raise ConfigError on the first bad `bench.*` value."""
    if cfg.target != "engine" and not cfg.target.startswith(("http://", "https://")):
        raise ConfigError(f"bench.target={cfg.target!r} is not valid; valid choices: engine, "
                          "or an http(s):// base URL such as http://127.0.0.1:8000/v1")
    _choice("bench.workload", cfg.workload, WORKLOADS)
    _choice("bench.len_dist", cfg.len_dist, LEN_DISTS)
    for key in ("num_requests", "prompt_len", "output_len", "shared_prefix_len",
                "num_prefixes"):
        _at_least(f"bench.{key}", getattr(cfg, key), 1)
    _at_least("bench.num_warmup", cfg.num_warmup, 0)
    for key in ("prompt_len_spread", "output_len_spread"):
        _at_least(f"bench.{key}", getattr(cfg, key), 0)
    if cfg.max_concurrency is not None:
        _at_least("bench.max_concurrency", cfg.max_concurrency, 1)
    _positive({"bench.duration_s": cfg.duration_s, "bench.request_rate": cfg.request_rate,
               "bench.timeout_s": cfg.timeout_s, "bench.slo.max_ttft_s": cfg.slo.max_ttft_s,
               "bench.slo.max_tpot_s": cfg.slo.max_tpot_s,
               "bench.slo.max_e2e_s": cfg.slo.max_e2e_s})
    if cfg.duration_s is not None and cfg.request_rate is None and cfg.max_concurrency is None:
        raise ConfigError("bench.duration_s needs bench.request_rate or bench.max_concurrency "
                          "(else every request would be sent at once, without end)")
    if not 0.0 <= cfg.tune.min_slo_attainment <= 1.0:
        raise ConfigError(f"bench.tune.min_slo_attainment={cfg.tune.min_slo_attainment} "
                          "must be within 0..1")
    if not RECIPE_NAME.match(cfg.tune.recipe_name):
        raise ConfigError(f"bench.tune.recipe_name={cfg.tune.recipe_name!r} must be a file "
                          "name of letters, digits, '.', '_' and '-'")


def _choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not valid; valid choices: {', '.join(valid)}")


def _at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{key}={value} must be >= {low}")


def _positive(values: dict[str, float | None]) -> None:
    for key, value in values.items():
        if value is not None and value <= 0:
            raise ConfigError(f"{key}={value} must be > 0 (or null)")
