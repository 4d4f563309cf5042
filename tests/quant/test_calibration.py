"""Calibration / evaluation text: disjoint, deterministic splits cut into token blocks."""

from __future__ import annotations

from pydoc_data.topics import topics

import pytest
import torch

from toolkit.quant.calibration import (
    MIN_SHARED_WORDS,
    split_paragraphs,
    split_text,
    token_blocks,
    word_runs,
)


def _bytes(text: str) -> list[int]:
    return list(text.encode())


def test_splits_share_no_paragraph_and_no_long_run_of_words():
    calibration, evaluation = split_paragraphs("calibration"), split_paragraphs("evaluation")
    assert not set(calibration) & set(evaluation)
    calibration_text = split_text("calibration")
    assert not any(p in calibration_text for p in evaluation)
    assert not word_runs(calibration_text) & word_runs(split_text("evaluation"))


def test_no_long_stretch_of_evaluation_characters_is_in_the_calibration_text():
    """Independent of word splitting: every 8-words-long-ish character window."""
    calibration, evaluation = split_text("calibration"), split_text("evaluation")
    width = 8 * MIN_SHARED_WORDS
    seen = {calibration[i:i + width] for i in range(len(calibration) - width + 1)}
    assert not any(evaluation[i:i + width] in seen for i in range(len(evaluation) - width + 1))


def test_the_splits_cover_most_of_the_docs_with_a_fifth_held_out():
    total = sum(map(len, topics.values()))
    calibration, evaluation = len(split_text("calibration")), len(split_text("evaluation"))
    assert 0.1 < evaluation / total < 0.3
    assert calibration + evaluation > 0.75 * total
    every_paragraph = {p.strip("\n") for t in topics.values() for p in t.split("\n\n")}
    assert set(split_paragraphs("evaluation")) <= every_paragraph


def test_splits_are_deterministic():
    split_paragraphs.cache_clear()
    first = split_text("evaluation")
    split_paragraphs.cache_clear()
    assert split_text("evaluation") == first


def test_unknown_split_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid choices: calibration, evaluation"):
        split_paragraphs("train")


def test_blocks_are_consecutive_slices_of_the_tokenized_text():
    ids = torch.tensor(_bytes(split_text("evaluation")))
    blocks = token_blocks("evaluation", _bytes, 100)
    assert blocks.dtype == torch.int64 and blocks.shape == (ids.numel() // 100, 100)
    assert torch.equal(blocks.flatten(), ids[:blocks.numel()])


def test_max_blocks_takes_evenly_spaced_blocks_in_order():
    every = token_blocks("calibration", _bytes, 64)
    some = token_blocks("calibration", _bytes, 64, max_blocks=5)
    assert some.shape == (5, 64)
    assert torch.equal(some[0], every[0]) and torch.equal(some[-1], every[-1])
    rows = [next(i for i in range(len(every)) if torch.equal(every[i], b)) for b in some]
    assert rows == sorted(rows) and rows[2] == pytest.approx((len(every) - 1) / 2, abs=1)


def test_too_little_text_for_one_block_is_an_error():
    with pytest.raises(ValueError, match="fewer than one block"):
        token_blocks("evaluation", _bytes, 10**9)
