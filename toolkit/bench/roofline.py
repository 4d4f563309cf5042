"""The roofline of a benchmark report: the machine's limits and each job's distance from the
one that bounds it.

Two limits are measured on the machine the report is written on (the target is assumed to
share it): the bf16 GEMM peak (GFLOP/s of a large matmul) and the DRAM read bandwidth (GB/s
of a sum over a buffer far larger than the caches). A model's cost per token comes from its
checkpoint: ``2 * P`` FLOPs for the ``P`` weights that multiply every token (each linear
layer and the LM head; the embedding lookup is free) and ``P * b`` bytes of them read per
step, ``b`` the bytes per weight of the quantization the job configures.

Which limit applies depends on the load: at one stream a decode step reads every weight for
one token, so output tokens/s is bounded by bandwidth / weight bytes; with many streams
each read serves many tokens and the bound is compute: (prompt + output) tokens/s at most
peak / FLOPs per token. A job's ``peak_concurrency`` (the most requests it had in flight)
chooses the bound.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.bench.records import RequestRecord
from toolkit.config.schema import ToolkitConfig

GEMM_SHAPE = (1024, 2048, 2048)
"""(M, K, N) of the matmul that measures the bf16 peak (8.6 GFLOP)."""

BANDWIDTH_BUFFER_BYTES = 256 << 20
"""The buffer the bandwidth is read from: far larger than any CPU's last-level cache."""

BYTES_PER_WEIGHT = {"q4_1": 20 / 32, "awq": 0.5 + 4 / 128, "gptq": 0.5 + 4 / 128,
                    "fp8": 1.0, "w8a8": 1.0}
"""Bytes a quantized weight takes with its share of scales (q4_1: 16 codes, a scale and a
minimum per 32; AWQ/GPTQ: 4 bits plus a 16-bit scale and a 4-bit zero per group of 128).
Dense weights take their dtype's size."""

DTYPE_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0}

ROOFLINE_KEYS = ("peak_concurrency", "model_flops_per_token", "model_weight_bytes")
"""What a job adds to its metrics for the roofline (0 where its model is unknown)."""


@dataclass(frozen=True)
class MachineLimits:
    """The two limits of this machine, measured with ``num_threads`` threads."""

    gemm_gflops: float
    """bf16 GEMM peak, GFLOP/s."""
    dram_gbps: float
    """DRAM read bandwidth, GB/s (10^9 bytes)."""
    num_threads: int


def measure_machine(num_threads: int | None = None, repeats: int = 5) -> MachineLimits:
    """Best of ``repeats`` timings of the GEMM and of the read (~1 s on 2 cores), with
    ``num_threads`` threads (default: one per core, as a server uses)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads or os.cpu_count() or 1)
    try:
        m, k, n = GEMM_SHAPE
        a, b = torch.randn(m, k).bfloat16(), torch.randn(k, n).bfloat16()
        gemm_s = _best_time(lambda: torch.mm(a, b), repeats)
        buffer = torch.ones(BANDWIDTH_BUFFER_BYTES // 4)
        read_s = _best_time(buffer.sum, repeats)
        return MachineLimits(2 * m * k * n / gemm_s / 1e9, BANDWIDTH_BUFFER_BYTES / read_s / 1e9,
                             torch.get_num_threads())
    finally:
        torch.set_num_threads(threads)


def _best_time(run, repeats: int) -> float:
    run()  # warm-up: first-touch pages, oneDNN's kernel choice
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


@dataclass(frozen=True)
class ModelCost:
    """What one token costs a model: its multiplied weights and their bytes as served."""

    num_matmul_weights: int
    """Weights of every linear layer and the LM head (a tied head counted once, as the head)."""
    bytes_per_weight: float

    @property
    def flops_per_token(self) -> float:
        return 2.0 * self.num_matmul_weights

    @property
    def weight_bytes(self) -> float:
        return self.num_matmul_weights * self.bytes_per_weight


def model_cost(model_dir: Path, quant_method: str, dtype: str) -> ModelCost:
    """The cost of the checkpoint in ``model_dir`` (config.json + *.safetensors) served with
    ``quant_method`` (``auto`` reads config.json's quantization_config) in ``dtype``."""
    config = json.loads((model_dir / "config.json").read_text())
    if quant_method == "auto":
        quant_method = config.get("quantization_config", {}).get("quant_method", "none")
    per_weight = BYTES_PER_WEIGHT.get(quant_method, DTYPE_BYTES.get(dtype, 2.0))
    return ModelCost(_num_matmul_weights(model_dir, config), per_weight)


def config_model_cost(cfg: ToolkitConfig) -> ModelCost | None:
    """The cost of a job's model and quant config, or None where the model is not on this
    machine (for a URL target, an ``hf:`` model is not looked for on the hub)."""
    from toolkit.models.source import HF_PREFIX, resolve_model_dir

    model = cfg.model
    if cfg.bench.target != "engine" and not model.path and model.source.startswith(HF_PREFIX):
        return None
    try:
        return model_cost(resolve_model_dir(model.source, model.path), cfg.quant.method,
                          model.dtype)
    except (OSError, ValueError, KeyError):
        return None


@functools.cache
def _header_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors file's JSON header (no weights read)."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {name: entry["shape"] for name, entry in header.items() if name != "__metadata__"}


def _num_matmul_weights(model_dir: Path, config: dict) -> int:
    """Every 2-D ``*.weight`` of the checkpoint but the embedding, packed 4-bit ``*.qweight``
    tensors at their unpacked size, and the embedding once more as the LM head when the head
    is tied to it. A mixture of experts counts every expert and a vision model its vision
    tower, so their FLOPs per text token are overstated."""
    shapes: dict[str, list[int]] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        shapes.update(_header_shapes(path))
    bits = config.get("quantization_config", {}).get("bits", 4)
    total = 0
    for name, shape in shapes.items():
        if len(shape) != 2 or name.endswith("embed_tokens.weight"):
            continue
        if name.endswith(".weight"):
            total += math.prod(shape)
        elif name.endswith(".qweight"):  # int32 words of 32 // bits codes
            total += math.prod(shape) * (32 // bits)
    if not any(name.endswith("lm_head.weight") for name in shapes):
        total += sum(math.prod(shape) for name, shape in shapes.items()
                     if name.endswith("embed_tokens.weight"))
    return total


def peak_concurrency(records: list[RequestRecord]) -> int:
    """The most requests of a run that were in flight at once."""
    events = sorted([(r.start, 1) for r in records] + [(r.end, -1) for r in records],
                    key=lambda event: (event[0], event[1]))
    in_flight = peak = 0
    for _, change in events:
        in_flight += change
        peak = max(peak, in_flight)
    return peak


def job_roofline_metrics(records: list[RequestRecord], cost: ModelCost | None
                         ) -> dict[str, float | int]:
    """A job's ROOFLINE_KEYS (the model's figures 0 where ``cost`` is None)."""
    return {"peak_concurrency": peak_concurrency(records),
            "model_flops_per_token": cost.flops_per_token if cost else 0.0,
            "model_weight_bytes": cost.weight_bytes if cost else 0.0}


def bound(metrics: dict[str, float | int], limits: MachineLimits
          ) -> tuple[str, float, float] | None:
    """(which bound, its tokens/s, the job's fraction of it) for one job's metrics, or
    None where the job's model cost is unknown. One stream: output tokens/s against
    bandwidth / weight bytes; more: prompt + output tokens/s against peak / FLOPs."""
    if not metrics.get("model_flops_per_token"):
        return None
    if metrics["peak_concurrency"] <= 1:
        limit = limits.dram_gbps * 1e9 / metrics["model_weight_bytes"]
        return "bandwidth", limit, metrics["output_tokens_per_s"] / limit
    limit = limits.gemm_gflops * 1e9 / metrics["model_flops_per_token"]
    return "compute", limit, metrics["total_tokens_per_s"] / limit


def markdown_roofline(limits: MachineLimits, rows: list[tuple[str, dict]]) -> str:
    """The report's roofline section: the limits, then each (job name, metrics) row."""
    lines = ["## Roofline", "",
             f"Measured here with {limits.num_threads} threads: bf16 GEMM peak "
             f"{limits.gemm_gflops:.0f} GFLOP/s, DRAM read {limits.dram_gbps:.1f} GB/s. "
             "One stream is bounded by bandwidth (output tok/s <= bandwidth / weight bytes), "
             "more streams by compute ((prompt + output) tok/s <= peak / FLOPs per token); "
             "weight bytes follow each job's model and quant config.", "",
             "| job | streams | GFLOP/token | weight MB | bound | bound tok/s | measured tok/s "
             "| % of bound |", "|---|---|---|---|---|---|---|---|"]
    for name, metrics in rows:
        found = bound(metrics, limits)
        if found is None:
            lines.append(f"| {name} | {metrics['peak_concurrency']} | - | - | - | - | - | - |")
            continue
        kind, limit, fraction = found
        measured = metrics["output_tokens_per_s" if kind == "bandwidth" else "total_tokens_per_s"]
        lines.append(f"| {name} | {metrics['peak_concurrency']} | "
                     f"{metrics['model_flops_per_token'] / 1e9:.3f} | "
                     f"{metrics['model_weight_bytes'] / 1e6:.0f} | {kind} | {limit:.0f} | "
                     f"{measured:.1f} | {100 * fraction:.1f} |")
    return "\n".join(lines)
