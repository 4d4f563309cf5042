"""Proposers by name (``speculative.method``); "none" builds no proposer."""

from __future__ import annotations

from toolkit.config.schema import SpeculativeConfig
from toolkit.registry import Registry
from toolkit.speculative.base import Proposer, ProposerContext

PROPOSERS = Registry[Proposer]("speculative method")
"""Factories take (SpeculativeConfig, ProposerContext)."""


@PROPOSERS.register("ngram")
def _ngram(config: SpeculativeConfig, context: ProposerContext) -> Proposer:
    from toolkit.speculative.ngram import NgramProposer

    return NgramProposer(config.prompt_lookup_min, config.prompt_lookup_max)


@PROPOSERS.register("draft")
def _draft(config: SpeculativeConfig, context: ProposerContext) -> Proposer:
    from toolkit.speculative.draft import draft_proposer

    return draft_proposer(context)


def build_proposer(config: SpeculativeConfig, context: ProposerContext) -> Proposer | None:
    """The configured proposer, or None for method none."""
    if config.method == "none":
        return None
    return PROPOSERS.get(config.method)(config, context)
