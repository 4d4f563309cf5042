"""float8_e4m3fn bit casts shared by the fp8 KV cache and the fp8 weight method."""

from __future__ import annotations

import torch

FP8_MAX = 448.0
"""Largest finite float8_e4m3fn value."""
BIT_CASTS = {  # dtype -> how fp8_bits_as moves an fp8 byte into that dtype's bits
    # dtype: (left shift of the fp8 byte as int16, mask keeping sign + exponent/mantissa)
    torch.bfloat16: (4, -30736),  # mask 0x87F0: e4m3 exponent bias 7 under bf16's 127
    torch.float16: (7, -16512),  # mask 0xBF80: e4m3 exponent bias 7 under fp16's 15
}
BIT_CAST_FACTORS = {torch.bfloat16: 2.0**120, torch.float16: 2.0**8}
"""dtype -> the power of two by which ``fp8_bits_as(values, dtype)`` falls short of the
values (the exponent bias difference)."""


def fp8_bits_as(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float8_e4m3fn values [...] -> ``values / BIT_CAST_FACTORS[dtype]`` in ``dtype``
    (bfloat16 or float16), exactly, by moving each byte's sign and exponent/mantissa bits
    into place with two integer ops (several times faster than ``Tensor.to`` on the CPU).
    NaN bytes do not stay NaN (quantize_fp8 and quantize_kv never write them)."""
    shift, mask = BIT_CASTS[dtype]
    return ((values.view(torch.int8).to(torch.int16) << shift) & mask).view(dtype)
