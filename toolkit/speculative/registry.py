"""Proposers by name (``speculative.method``); "none" builds no proposer."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.config.schema import SpeculativeConfig
from toolkit.registry import Registry
from toolkit.speculative.base import Proposer


@dataclass(frozen=True)
class ProposerContext:
    """What a proposer may need from the target's runtime."""

    device: str
    attention_backend: str
    """Resolved attention backend name (a draft model uses the same kind)."""
    num_blocks: int
    """KV pages of the target; a draft model gets as many."""
    block_size: int
    vocab_size: int
    """Width of the target's logits; draft distributions are laid out on it."""
    prepack_weights: bool = True


PROPOSERS = Registry[Proposer]("speculative method")
"""Factories take (SpeculativeConfig, ProposerContext)."""


@PROPOSERS.register("ngram")
def _ngram(config: SpeculativeConfig, context: ProposerContext) -> Proposer:
    from toolkit.speculative.ngram import NgramProposer

    return NgramProposer(config.prompt_lookup_min, config.prompt_lookup_max)


@PROPOSERS.register("draft")
def _draft(config: SpeculativeConfig, context: ProposerContext) -> Proposer:
    from toolkit.speculative.draft import load_draft_proposer

    return load_draft_proposer(config, context)


def build_proposer(config: SpeculativeConfig, context: ProposerContext) -> Proposer | None:
    """The configured proposer, or None for method none."""
    if config.method == "none":
        return None
    return PROPOSERS.get(config.method)(config, context)
