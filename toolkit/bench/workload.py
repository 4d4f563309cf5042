"""Workloads: the seeded list of requests one benchmark run sends.

random        prompts of random words, lengths fixed or drawn around bench.prompt_len
chat          chat conversations from a JSONL file (the shipped data/chat.jsonl by default)
shared_prefix bench.num_prefixes common prefixes, each request adds a random suffix

Prompt lengths are in words, which BPE tokenizers encode as about one token each; the
token counts the server reports are what the metrics use.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.config.bench_checks import LEN_DISTS, WORKLOADS
from toolkit.config.errors import ConfigError
from toolkit.config.schema import BenchConfig


@dataclass(frozen=True)
class BenchRequest:
    """One request: a text `prompt` (completions) or chat `messages`, never both."""

    max_tokens: int
    prompt: str | None = None
    messages: tuple[dict, ...] | None = None
    seed: int | None = None
    """The request's sampling seed (bench.sampling_seed); None sends none."""
    lora_name: str | None = None
    """The LoRA adapter it runs with (bench.lora_adapters, round robin); None: the base
    model."""

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


def build_workload(cfg: BenchConfig) -> list[BenchRequest]:
    """cfg.num_requests requests of cfg.workload, the same for the same cfg.seed."""
    rng = np.random.default_rng(cfg.seed)
    output_lens = sample_lengths(rng, cfg.output_len, cfg.output_len_spread, cfg.len_dist,
                                 cfg.num_requests)
    builders = {"random": _random_prompts, "shared_prefix": _shared_prefix_prompts,
                "chat": _chat_prompts}
    assert set(builders) == set(WORKLOADS)
    payloads = builders[cfg.workload](cfg, rng)
    seeds = ([None] * cfg.num_requests if cfg.sampling_seed is None
             else [cfg.sampling_seed + i for i in range(cfg.num_requests)])
    adapters = list(cfg.lora_adapters)
    loras = [adapters[i % len(adapters)] if adapters else None
             for i in range(cfg.num_requests)]
    return [BenchRequest(int(n), prompt=p, seed=s, lora_name=a) if isinstance(p, str)
            else BenchRequest(int(n), messages=p, seed=s, lora_name=a)
            for p, n, s, a in zip(payloads, output_lens, seeds, loras)]


def sample_lengths(rng: np.random.Generator, mean: int, spread: float, dist: str,
                   num: int) -> np.ndarray:
    """`num` integer lengths around `mean`: all equal when spread is 0, else uniform in
    mean * [1 - spread, 1 + spread] or normal with std mean * spread; never below 1."""
    if spread == 0:
        return np.full(num, mean, dtype=np.int64)
    if dist == "uniform":
        values = rng.uniform(mean * (1 - spread), mean * (1 + spread), num)
    elif dist == "normal":
        values = rng.normal(mean, mean * spread, num)
    else:
        raise ConfigError(f"bench.len_dist={dist!r} is not valid; valid choices: "
                          f"{', '.join(LEN_DISTS)}")
    return np.maximum(np.rint(values), 1).astype(np.int64)


def random_text(rng: np.random.Generator, num_words: int) -> str:
    words = vocabulary()
    return " ".join(words[i] for i in rng.integers(0, len(words), num_words))


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """Distinct lowercase words of the Python docs that ship with Python (pydoc_data)."""
    from pydoc_data.topics import topics

    text = " ".join(topics.values())
    return tuple(sorted(set(re.findall(r"\b[a-z]{3,9}\b", text))))


def load_chat_dataset(path: str | None) -> list[tuple[dict, ...]]:
    """Conversations of a JSONL file: {"messages": [...]} lines, or {"prompt": "..."} lines
    that become one user message."""
    source = Path(path) if path else importlib.resources.files("toolkit.bench") / "data" / "chat.jsonl"
    try:
        lines = source.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"bench.dataset={path!r} cannot be read: {exc.strerror}") from None
    conversations = []
    for number, line in enumerate(filter(str.strip, lines), 1):
        row = json.loads(line)
        if "messages" in row:
            conversations.append(tuple(row["messages"]))
        elif "prompt" in row:
            conversations.append(({"role": "user", "content": row["prompt"]},))
        else:
            raise ConfigError(f"bench.dataset line {number} has neither messages nor prompt")
    if not conversations:
        raise ConfigError(f"bench.dataset={path!r} holds no conversations")
    return conversations


def _random_prompts(cfg: BenchConfig, rng: np.random.Generator) -> list[str]:
    lengths = sample_lengths(rng, cfg.prompt_len, cfg.prompt_len_spread, cfg.len_dist,
                             cfg.num_requests)
    return [random_text(rng, int(n)) for n in lengths]


def _shared_prefix_prompts(cfg: BenchConfig, rng: np.random.Generator) -> list[str]:
    prefixes = [random_text(rng, cfg.shared_prefix_len) for _ in range(cfg.num_prefixes)]
    suffixes = _random_prompts(cfg, rng)
    owners = rng.integers(0, cfg.num_prefixes, cfg.num_requests)
    return [f"{prefixes[i]} {suffix}" for i, suffix in zip(owners, suffixes)]


def _chat_prompts(cfg: BenchConfig, rng: np.random.Generator) -> list[tuple[dict, ...]]:
    """Conversations in a seeded order, each used once before any repeats."""
    conversations = load_chat_dataset(cfg.dataset)
    num_rounds = -(-cfg.num_requests // len(conversations))
    order = np.concatenate([rng.permutation(len(conversations)) for _ in range(num_rounds)])
    return [conversations[i] for i in order[:cfg.num_requests]]
