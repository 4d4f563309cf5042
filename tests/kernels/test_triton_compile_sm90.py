"""Every Triton kernel compiles for an H100 (sm_90) on this GPU-less machine.

The interpreter runs kernels as numpy and forgives what the compiler refuses (dtypes of
tl.dot operands, constexpr misuse, shapes of tl.interleave), so the parity tests alone do
not prove the GPU path builds. This runs Triton's real pipeline down to a cubin (ptxas
ships in the triton wheel) in a subprocess without TRITON_INTERPRET.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]
AWQ_POINTERS = {"qweight_ptr": "*i32", "qzeros_ptr": "*i32", "scales_ptr": "*fp16"}


def _compile(fn, signature: dict[str, str], constexprs: dict[str, object]) -> None:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    names = fn.arg_names
    source = ASTSource(fn=fn, signature={n: signature.get(n, "constexpr") for n in names},
                       constexprs={(names.index(k),): v for k, v in constexprs.items()})
    kernel = compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    assert kernel.asm["cubin"], fn


def _compile_awq() -> None:
    from toolkit.kernels import _awq_gemm_triton as awq

    for dtype, split_k in (("fp16", 1), ("bf16", 4), ("fp32", 1)):
        out = dtype if split_k == 1 else "fp32"
        _compile(awq._awq_gemm_kernel,
                 {"x_ptr": f"*{dtype}", **AWQ_POINTERS, "out_ptr": f"*{out}", "M": "i32",
                  "N": "i32", "K": "i32", "stride_xm": "i32"},
                 {"GROUP_SIZE": 128, "BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64,
                  "SPLIT_K": split_k, "DOT_PRECISION": "ieee" if dtype == "fp32" else None,
                  "UPCAST_DOT": False})
    _compile(awq._awq_dequantize_kernel,
             {**AWQ_POINTERS, "out_ptr": "*fp16", "K": "i32", "N": "i32"},
             {"GROUP_SIZE": 128, "BLOCK_K": 32, "BLOCK_N": 64})


def _compile_hot_path() -> None:
    from toolkit.kernels import (
        _fused_add_rmsnorm_triton,
        _kv_store_triton,
        _rotary_triton,
        _silu_and_mul_triton,
    )

    bf16 = "*bf16"
    _compile(_fused_add_rmsnorm_triton._fused_add_rmsnorm_kernel,
             {"x_ptr": bf16, "residual_ptr": bf16, "weight_ptr": bf16, "normed_ptr": bf16,
              "new_residual_ptr": bf16, "x_row_stride": "i32", "residual_row_stride": "i32",
              "hidden_size": "i32", "eps": "fp32"}, {"BLOCK_SIZE": 1024})
    _compile(_rotary_triton._rotary_kernel,
             {"q_ptr": bf16, "k_ptr": bf16, "cos_ptr": bf16, "sin_ptr": bf16, "q_out_ptr": bf16,
              "k_out_ptr": bf16, "q_token_stride": "i32", "q_head_stride": "i32",
              "k_token_stride": "i32", "k_head_stride": "i32", "num_qo_heads": "i32",
              "num_kv_heads": "i32"}, {"HEAD_DIM": 64, "BLOCK_HQ": 16, "BLOCK_HKV": 4})
    _compile(_silu_and_mul_triton._silu_and_mul_kernel,
             {"gate_up_ptr": bf16, "out_ptr": bf16, "row_stride": "i32",
              "intermediate_size": "i32"}, {"BLOCK_SIZE": 1024})
    _compile(_kv_store_triton._store_kv_kernel,
             {"k_ptr": bf16, "v_ptr": bf16, "cache_ptr": bf16, "slot_ptr": "*i64",
              "k_token_stride": "i32", "v_token_stride": "i32", "page_size": "i32",
              "row_size": "i32"}, {"BLOCK_SIZE": 256})


def test_every_kernel_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # (silences triton 3.9's default-change warning)
    result = subprocess.run([sys.executable, __file__], check=False, cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "compiled", result.stdout


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _compile_awq()
    _compile_hot_path()
    print("compiled")
