"""Proposers by name (``speculative.method``; "none" is no proposer: build_runtime builds
none)."""

from __future__ import annotations

from toolkit.config.schema import SpeculativeConfig
from toolkit.registry import Registry
from toolkit.runner.proposer import Proposer
from toolkit.speculative.base import ProposerContext

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


def build_proposer(config: SpeculativeConfig, context: ProposerContext) -> Proposer:
    """The proposer of ``config.method``."""
    return PROPOSERS.get(config.method)(config, context)
