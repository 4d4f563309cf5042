"""The config schema: one frozen dataclass per group. Field docstrings are the help text.

YAML under conf/ only chooses and overrides these fields; an unknown key fails at compose.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.config.schema.bench import (
    BenchConfig,
    SamplingConfig,
    SloConfig,
    TuneConfig,
)
from toolkit.config.schema.engine import (
    AttentionConfig,
    CacheConfig,
    DeviceConfig,
    RunnerConfig,
    SchedulerConfig,
    SpeculativeConfig,
)
from toolkit.config.schema.model import LoraConfig, ModelConfig, QuantConfig
from toolkit.config.schema.parallel import ParallelConfig, RayConfig
from toolkit.config.schema.server import (
    ChatConfig,
    EmbeddingConfig,
    GuidedConfig,
    MediaConfig,
    ServerConfig,
)

__all__ = [
    "AttentionConfig", "BenchConfig", "CacheConfig", "ChatConfig", "DeviceConfig",
    "EmbeddingConfig", "GuidedConfig", "LoraConfig", "MediaConfig", "ModelConfig",
    "ParallelConfig", "QuantConfig", "RayConfig", "RunnerConfig", "SamplingConfig",
    "SchedulerConfig", "ServerConfig", "SloConfig", "SpeculativeConfig", "ToolkitConfig",
    "TuneConfig",
]


@dataclass(frozen=True)
class ToolkitConfig:
    """The whole composed config: one field per config group."""

    model: ModelConfig = field(default_factory=ModelConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    seed: int = 0
    """Global seed for unseeded sampling."""
