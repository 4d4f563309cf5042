"""oneDNN-packed linear weights: bit-identical to F.linear, applied only where they pay."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from toolkit.layers.linear import (
    INVARIANT_MIN_ROWS,
    MAX_INVARIANT_ROWS,
    PACKED_MAX_TOKENS,
    batch_variance,
    can_pack,
    linear,
    pack_weight,
)

needs_onednn = pytest.mark.skipif(not can_pack(torch.empty(2, 2, dtype=torch.bfloat16)),
                                  reason="this torch build has no oneDNN linear packing")


@needs_onednn
@pytest.mark.parametrize("num_tokens", [0, 1, 3, 16, 70])
@pytest.mark.parametrize("with_bias", [False, True])
def test_packed_bf16_linear_is_bit_identical(num_tokens: int, with_bias: bool):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 64, generator=generator).bfloat16()
    bias = torch.randn(96, generator=generator).bfloat16() if with_bias else None
    x = torch.randn(num_tokens, 64, generator=generator).bfloat16()
    packed = pack_weight(weight)
    assert packed is not None
    out = linear(x, weight, bias, packed)
    assert out.shape == (num_tokens, 96) and out.dtype == torch.bfloat16
    assert torch.equal(out, F.linear(x, weight, bias))


@needs_onednn
@pytest.mark.parametrize("shape", [(960, 576), (576, 576), (3072, 576), (576, 1536)])
def test_packed_matches_f_linear_for_every_decode_batch_size(shape: tuple[int, int]):
    """SmolLM2's projection shapes, every row count that takes the packed path."""
    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(shape, generator=generator) / 20).bfloat16()
    packed = pack_weight(weight)
    mismatched = []
    for num_tokens in range(1, PACKED_MAX_TOKENS + 2):
        x = torch.randn(num_tokens, shape[1], generator=generator).bfloat16()
        if not torch.equal(linear(x, weight, None, packed), F.linear(x, weight)):
            mismatched.append(num_tokens)
    assert mismatched == []


def test_float32_and_non_cpu_weights_are_not_packed():
    assert pack_weight(torch.randn(8, 4)) is None  # float32 stays on F.linear (the oracle)
    assert pack_weight(torch.randn(8, dtype=torch.bfloat16)) is None  # not a matrix
    x, weight = torch.randn(3, 4), torch.randn(8, 4)
    assert torch.equal(linear(x, weight), F.linear(x, weight))


def _rows_alone_and_batched(x: torch.Tensor, fn) -> list[int]:
    """Row counts n (and offsets) at which fn(x[a:a+n]) differs from fn on each row alone."""
    alone = torch.cat([fn(x[i:i + 1]) for i in range(x.shape[0])])
    differing = []
    for start, num_rows in [(0, 2), (0, 7), (3, 16), (0, 64), (5, 64), (0, 128), (0, 129),
                            (0, x.shape[0])]:
        if not torch.equal(fn(x[start:start + num_rows]), alone[start:start + num_rows]):
            differing.append((start, num_rows))
    return differing


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [
    (960, 576), (576, 1536),
    pytest.param((49152, 576), marks=pytest.mark.slow),  # the LM head: ~30 s of 128-row calls
])
@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("min_rows", INVARIANT_MIN_ROWS)
def test_invariant_linear_rows_do_not_depend_on_their_neighbours(dtype, shape, num_threads,
                                                                 min_rows):
    """SmolLM2's projections and LM head: every row the same bits alone (padded to
    ``min_rows`` rows), beside 1 .. 199 others, and across a 128-row cut; on one thread or
    two. The fixed-shape route (every call 128 rows) must hold on any CPU; the fast one
    wherever the start-up check lets the server use it."""
    generator = torch.Generator().manual_seed(1)
    weight = (torch.randn(shape, generator=generator) / 20).to(dtype)
    bias = torch.randn(shape[0], generator=generator).to(dtype)
    x = torch.randn(200 if shape[0] < 10000 else 140, shape[1], generator=generator).to(dtype)
    packed = pack_weight(weight, batch_invariant=True)
    assert packed is not None
    if min_rows != MAX_INVARIANT_ROWS and (variance := batch_variance(weight, packed)):
        pytest.skip(f"this CPU's oneDNN varies ({variance}): the server takes fixed shapes")
    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        assert _rows_alone_and_batched(x, lambda rows: linear(
            rows, weight, bias, packed, batch_invariant=True, min_rows=min_rows)) == []
    finally:
        torch.set_num_threads(threads)
    empty = linear(x[:0], weight, bias, packed, True, min_rows)
    assert torch.equal(empty, x[:0, :0].new_empty(0, shape[0]))


@needs_onednn
def test_batch_variance_names_the_shape_and_row_count_where_rows_change(monkeypatch):
    from toolkit.layers import linear as linear_module

    weight = torch.randn(96, 64).bfloat16()
    packed = pack_weight(weight, batch_invariant=True)
    assert linear_module.batch_variance(weight, packed) is None
    real = linear_module._packed_linear
    monkeypatch.setattr(linear_module, "_packed_linear",
                        lambda x, p, bias: real(x, p, bias) + (x.shape[0] == 16))
    assert linear_module.batch_variance(weight, packed) == "[96, 64] at 16 rows"
