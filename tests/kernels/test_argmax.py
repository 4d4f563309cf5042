"""The native greedy argmax (ops.cpp argmax_rows) picks the index torch.argmax picks: the
first maximum, the first NaN where a row has one."""

from __future__ import annotations

import pytest
import torch

from toolkit.kernels.argmax import argmax_rows
from toolkit.kernels.route import TORCH

SHAPES = [(1, 1), (3, 7), (2, 64), (2, 65), (4, 200), (5, 1000), (16, 49152)]
"""(N, V): one element, a partial vector, whole and partial blocks of 64, a vocabulary."""


@pytest.mark.parametrize("shape", SHAPES)
def test_random_rows_match_torch(native_kernels, shape):
    generator = torch.Generator().manual_seed(shape[1])
    for _ in range(4):
        logits = torch.randn(*shape, generator=generator)
        assert torch.equal(argmax_rows(logits, kernels=native_kernels), logits.argmax(dim=-1))


def _edge_rows(vocab: int) -> torch.Tensor:
    nan, inf = float("nan"), float("inf")
    rows = torch.randn(9, vocab, generator=torch.Generator().manual_seed(1))
    rows[0, [vocab // 3, vocab - 2]] = 100.0  # a tie: the first
    rows[1] = -inf  # all -inf: index 0
    rows[2, vocab - 1] = 50.0  # the maximum in the tail past the last block of 64
    rows[3, [10, vocab // 2]] = torch.tensor([nan, 1e9])  # a NaN beats any number
    rows[4, [vocab - 3, 200]] = nan  # two NaNs: the first
    rows[5] = 0.0
    rows[5, 3] = -0.0  # -0 equals +0: index 0
    rows[6, [64, 128]] = inf
    rows[7] = -1.0
    rows[7, [63, 64]] = 0.0  # the maximum on both sides of a block edge
    rows[8, vocab - 1] = nan  # a NaN last
    return rows


@pytest.mark.parametrize("vocab", [300, 1003])
def test_ties_infinities_and_nans_match_torch(native_kernels, vocab):
    logits = _edge_rows(vocab)
    expected = logits.argmax(dim=-1)
    assert expected.tolist()[:3] == [vocab // 3, 0, vocab - 1]  # the rows test what they say
    assert torch.equal(argmax_rows(logits, kernels=native_kernels), expected)


def test_other_inputs_take_torch(native_kernels):
    logits = torch.randn(3, 100, dtype=torch.bfloat16)
    assert torch.equal(argmax_rows(logits, kernels=native_kernels), logits.argmax(dim=-1))
    strided = torch.randn(100, 3).t()  # not contiguous
    assert torch.equal(argmax_rows(strided, kernels=native_kernels), strided.argmax(dim=-1))
    assert torch.equal(argmax_rows(strided, kernels=TORCH), strided.argmax(dim=-1))
