"""The BGMV LoRA kernels (interpreter on CPU) vs their torch twin vs a per-row loop."""

from __future__ import annotations

import pytest
import torch

from toolkit.kernels import lora_bgmv

triton = pytest.importorskip("triton")


def _case(num_rows: int, num_slots: int, num_shrink: int, in_features: int,
          out_features: int, dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_rows, in_features, generator=generator).to(dtype)
    a = torch.randn(num_slots, num_shrink, in_features, generator=generator).to(dtype)
    b = torch.randn(num_slots, out_features, num_shrink, generator=generator).to(dtype)
    slots = torch.randint(-1, num_slots, (num_rows,), generator=generator)
    slots[0] = -1  # at least one row without an adapter
    return x, a, b, slots


def _per_row(x, a, b, slots) -> torch.Tensor:
    rows = [torch.zeros(b.shape[1]) if s < 0 else
            b[s].double() @ (a[s].double() @ row.double()) for row, s in zip(x, slots.tolist())]
    return torch.stack(rows).float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(7, 3, 8, 32, 48), (5, 4, 48, 100, 70), (1, 1, 16, 64, 64)])
def test_kernel_matches_twin(dtype: torch.dtype, shape):
    x, a, b, slots = _case(*shape, dtype)
    tolerance = ({"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32
                 else {"atol": 0.5, "rtol": 2e-2})
    torch.testing.assert_close(lora_bgmv.lora_delta_triton(x, a, b, slots).float(),
                               lora_bgmv.lora_delta_ref(x, a, b, slots).float(), **tolerance)


def test_twin_is_the_per_row_product():
    x, a, b, slots = _case(6, 3, 12, 20, 24, torch.float32)
    torch.testing.assert_close(lora_bgmv.lora_delta_ref(x, a, b, slots), _per_row(x, a, b, slots),
                               atol=1e-4, rtol=1e-4)


def test_rows_without_adapter_get_exact_zeros():
    x, a, b, _ = _case(4, 2, 8, 16, 16, torch.float32)
    slots = torch.full((4,), -1)
    assert torch.equal(lora_bgmv.lora_delta_triton(x, a, b, slots), torch.zeros(4, 16))
    assert torch.equal(lora_bgmv.lora_delta_ref(x, a, b, slots), torch.zeros(4, 16))


def test_a_row_does_not_depend_on_its_neighbours():
    x, a, b, slots = _case(9, 3, 8, 40, 24, torch.float32)
    whole = lora_bgmv.lora_delta_triton(x, a, b, slots)
    for row in (1, 4, 8):
        alone = lora_bgmv.lora_delta_triton(x[row:row + 1], a, b, slots[row:row + 1])
        assert torch.equal(alone[0], whole[row])


def test_empty_batch():
    x, a, b, slots = _case(1, 2, 8, 16, 16, torch.float32)
    assert lora_bgmv.lora_delta_triton(x[:0], a, b, slots[:0]).shape == (0, 16)
