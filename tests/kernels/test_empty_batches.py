"""Every Triton launcher accepts an empty batch (no tokens) and launches nothing."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")


def test_empty_batches_launch_nothing():
    from toolkit.kernels.fused_add_rmsnorm import fused_add_rmsnorm_triton
    from toolkit.kernels.kv_store import store_kv_triton
    from toolkit.kernels.rotary import apply_rotary_triton
    from toolkit.kernels.silu_and_mul import silu_and_mul_triton

    assert silu_and_mul_triton(torch.empty(0, 32)).shape == (0, 16)
    empty = torch.empty(0, 16)
    assert [t.shape for t in fused_add_rmsnorm_triton(empty, empty, torch.ones(16), 1e-6)] == [
        (0, 16), (0, 16)]
    q, k = apply_rotary_triton(torch.empty(0, 4, 8), torch.empty(0, 2, 8),
                               torch.empty(0, 1, 8), torch.empty(0, 1, 8))
    assert q.shape == (0, 4, 8) and k.shape == (0, 2, 8)
    cache = torch.zeros(2, 2, 4, 2, 8)
    store_kv_triton(cache, torch.empty(0, dtype=torch.int64), torch.empty(0, 2, 8),
                    torch.empty(0, 2, 8))
    assert cache.count_nonzero() == 0
