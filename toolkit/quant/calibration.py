"""Calibration and evaluation text from Python's own reference docs (``pydoc_data.topics``).

The ~80 topics (~465k characters) ship with CPython, so quantizers and perplexity runs
need no download. Topics repeat whole sections of one another, so the split is made per
paragraph, not per topic: the distinct paragraphs (blank-line separated, first occurrence
kept, in topic-name order) go to a split by a stable hash of their text, about one in five
to evaluation. Held-out paragraphs that occur in the calibration text or share a run of
MIN_SHARED_WORDS words with it are dropped, so no such run of evaluation text
is ever calibrated on. Hashing the text keeps the split stable when a Python release adds
or edits topics.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable

import torch

NUM_SPLIT_BUCKETS = 5
"""Paragraphs hash into this many buckets; bucket 0 is the evaluation split."""
MIN_SHARED_WORDS = 12
"""No run of this many consecutive (whitespace-separated) words of an evaluation paragraph
occurs in the calibration text."""
PARAGRAPH_SEPARATOR = "\n\n"
"""Splits topics into paragraphs and joins paragraphs back into a split's text."""
SPLITS = ("calibration", "evaluation")


def _paragraphs() -> list[str]:
    """Distinct non-blank paragraphs of every topic, topics in name order."""
    from pydoc_data.topics import topics

    seen: dict[str, None] = {}
    for name in sorted(topics):
        for paragraph in topics[name].split(PARAGRAPH_SEPARATOR):
            paragraph = paragraph.strip("\n")
            if paragraph.strip():
                seen.setdefault(paragraph)
    return list(seen)


def _is_held_out(paragraph: str) -> bool:
    return zlib.crc32(paragraph.encode()) % NUM_SPLIT_BUCKETS == 0


def word_runs(text: str) -> set[tuple[str, ...]]:
    """Every run of MIN_SHARED_WORDS consecutive words of ``text``."""
    words = text.split()
    return {tuple(words[i:i + MIN_SHARED_WORDS])
            for i in range(len(words) - MIN_SHARED_WORDS + 1)}


@functools.cache
def split_paragraphs(split: str) -> tuple[str, ...]:
    """The paragraphs of ``split`` (calibration or evaluation), in order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    paragraphs = _paragraphs()
    calibration = tuple(p for p in paragraphs if not _is_held_out(p))
    if split == "calibration":
        return calibration
    calibration_text = PARAGRAPH_SEPARATOR.join(calibration)
    seen = word_runs(calibration_text)
    return tuple(p for p in paragraphs if _is_held_out(p) and p not in calibration_text
                 and not word_runs(p) & seen)


def split_text(split: str) -> str:
    """The paragraphs of ``split`` joined by blank lines."""
    return PARAGRAPH_SEPARATOR.join(split_paragraphs(split))


def token_blocks(split: str, encode: Callable[[str], list[int]], seq_len: int,
                 max_blocks: int | None = None) -> torch.Tensor:
    """``split`` tokenized and cut into consecutive blocks of ``seq_len`` tokens.

    The tail shorter than a block is dropped. With ``max_blocks`` fewer than the blocks
    there are, that many are taken evenly spaced over the text (so every part of it is
    represented), in order. Returns int64 [num_blocks, seq_len].
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    ids = torch.tensor(encode(split_text(split)), dtype=torch.int64)
    num_blocks = ids.numel() // seq_len
    if num_blocks == 0:
        raise ValueError(f"the {split} text has {ids.numel()} tokens, fewer than one block "
                         f"of {seq_len}")
    blocks = ids[:num_blocks * seq_len].view(num_blocks, seq_len)
    if max_blocks is None or max_blocks >= num_blocks:
        return blocks
    if max_blocks < 1:
        raise ValueError(f"max_blocks must be >= 1, got {max_blocks}")
    picks = torch.linspace(0, num_blocks - 1, max_blocks).round().long()
    return blocks[picks]
