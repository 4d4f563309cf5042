"""What a proposer gets from build_runtime; the contract itself is
``toolkit.runner.proposer``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProposerContext:
    """What a proposer gets from build_runtime (which builds every object, a draft model's
    included)."""

    device: str
    num_pages: int
    """KV pages of the target; a draft model's pool has as many."""
    page_size: int
    vocab_size: int
    """Width of the target's logits; draft distributions are laid out on it."""
    draft_model: Any = None
    """speculative=draft: the loaded draft model (a torch module)."""
    draft_attention: Any = None
    """speculative=draft: its AttentionBackend, over a KV pool of its own."""
