"""Triton RMSNorm vs its torch twin (TRITON_INTERPRET=1 on CPU, set in tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from toolkit.kernels.rmsnorm import rmsnorm_ref
from toolkit.layers.rmsnorm import rms_norm

triton = pytest.importorskip("triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("hidden_size", [48, 64])
def test_kernel_matches_reference(dtype: torch.dtype, hidden_size: int):
    from toolkit.kernels.rmsnorm import rmsnorm

    torch.manual_seed(0)
    x = (torch.randn(5, hidden_size) * 3).to(dtype)
    weight = torch.randn(hidden_size).to(dtype)
    tolerance = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(rmsnorm(x, weight, 1e-5), rmsnorm_ref(x, weight, 1e-5), **tolerance)


def test_kernel_reads_strided_rows():
    from toolkit.kernels.rmsnorm import rmsnorm

    wide = torch.randn(4, 80)
    x = wide[:, :48]  # [4, 48], row stride 80
    weight = torch.randn(48)
    torch.testing.assert_close(rmsnorm(x, weight, 1e-6), rmsnorm_ref(x, weight, 1e-6))


def test_reference_agrees_with_the_model_layer():
    x, weight = torch.randn(3, 32, dtype=torch.bfloat16), torch.randn(32, dtype=torch.bfloat16)
    torch.testing.assert_close(rmsnorm_ref(x, weight, 1e-5), rms_norm(x, weight, 1e-5))


def test_importing_toolkit_kernels_does_not_import_triton():
    code = "import sys, toolkit.kernels.rmsnorm, toolkit.models.llama; print('triton' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
