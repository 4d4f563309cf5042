"""One benchmark job: build the workload, drive the target, write results.json and the
composed config into the job's directory."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from toolkit.bench.loadgen import BenchClient, ProgressFactory, run_load
from toolkit.bench.metrics import SPECULATIVE_KEYS, compute_metrics
from toolkit.bench.records import RequestRecord
from toolkit.bench.roofline import config_model_cost, job_roofline_metrics
from toolkit.bench.runtimes import RuntimePool
from toolkit.bench.workload import BenchRequest, build_workload
from toolkit.config.schema import ToolkitConfig

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"


@dataclass
class JobResult:
    """What a job measured, as written to its results.json."""

    name: str
    overrides: list[str]
    axes: dict[str, str]
    """The swept keys of this job and their values."""
    target: str
    metrics: dict[str, float | int]
    records: list[RequestRecord] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "overrides": self.overrides, "axes": self.axes,
                "target": self.target, "metrics": self.metrics,
                "records": [r.to_dict() for r in self.records]}

    @classmethod
    def from_dict(cls, data: dict) -> JobResult:
        """A results.json read back."""
        return cls(data["name"], list(data["overrides"]), dict(data["axes"]), data["target"],
                   dict(data["metrics"]), [RequestRecord(**r) for r in data["records"]])


def run_job(cfg: ToolkitConfig, job_dir: Path, name: str, overrides: list[str],
            axes: dict[str, str], pool: RuntimePool,
            progress: ProgressFactory | None = None) -> JobResult:
    """Run cfg.bench against cfg.bench.target and write the job's files."""
    requests = build_workload(cfg.bench)
    engine_metrics: dict[str, float | int] = {}
    label = " ".join(f"{key.split('.')[-1]}={value}" for key, value in axes.items())
    label = f"job {name}" + (f" ({label})" if label else "")
    if cfg.bench.target == "engine":
        records, duration_s, engine_metrics = _run_on_engine(cfg, requests, label, pool,
                                                             progress)
    else:
        records, duration_s = asyncio.run(_run_on_url(cfg, requests, label, progress))
    metrics = {**compute_metrics(records, duration_s, cfg.bench.slo), **engine_metrics}
    if cfg.bench.roofline:
        metrics.update(job_roofline_metrics(records, config_model_cost(cfg)))
    result = JobResult(name, overrides, axes, cfg.bench.target, metrics, records)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / RESULTS_FILE).write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    (job_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    return result


def _run_on_engine(cfg: ToolkitConfig, requests: list[BenchRequest], name: str,
                   pool: RuntimePool, progress: ProgressFactory | None
                   ) -> tuple[list[RequestRecord], float, dict]:
    """Records, duration, and the engine's speculative-decoding figures for the run."""
    from toolkit.bench.engine_client import EngineClient

    runtime = pool.get(cfg)
    before = dataclasses.replace(runtime.engine.metrics)
    runtime.engine.start()
    try:
        client = EngineClient(runtime.engine, cfg.bench.temperature, cfg.bench.ignore_eos)
        records, duration_s = asyncio.run(_drive(client, requests, cfg, name, progress))
    finally:
        runtime.engine.shutdown()
    return records, duration_s, _speculative_metrics(before, runtime.engine.metrics)


def _speculative_metrics(before, after) -> dict[str, float | int]:
    """Draft tokens verified and accepted during the run, the acceptance rate and the mean
    accepted length (tokens per verification, bonus included); zeros without speculation."""
    drafts = after.num_draft_tokens - before.num_draft_tokens
    accepted = after.num_accepted_tokens - before.num_accepted_tokens
    verifications = after.num_verifications - before.num_verifications
    figures = (drafts, accepted, accepted / drafts if drafts else 0.0,
               1 + accepted / verifications if verifications else 0.0)
    return dict(zip(SPECULATIVE_KEYS, figures))


async def _run_on_url(cfg: ToolkitConfig, requests: list[BenchRequest], name: str,
                      progress: ProgressFactory | None) -> tuple[list[RequestRecord], float]:
    from toolkit.bench.http_client import HttpClient

    bench = cfg.bench
    client = await HttpClient.create(bench.target, bench.model, bench.timeout_s,
                                     bench.temperature, bench.ignore_eos)
    return await _drive(client, requests, cfg, name, progress)


async def _drive(client: BenchClient, requests: list[BenchRequest], cfg: ToolkitConfig,
                 name: str, progress: ProgressFactory | None
                 ) -> tuple[list[RequestRecord], float]:
    try:
        return await run_load(client, requests, cfg.bench, name, progress)
    finally:
        await client.close()
