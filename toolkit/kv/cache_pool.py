"""The KV tensors: one paged cache per layer, in the model dtype or in fp8 with scales."""

from __future__ import annotations

import torch

from toolkit.kv.fp8 import BIT_CAST_FACTORS, FP8_MAX, fp8_bits_as

FP8_KV_DTYPES = (torch.float8_e4m3fn,)
"""Storage dtypes that are quantized (and so carry scales)."""
SCALE_DTYPE = torch.float32
"""Dtype of the fp8 cache's scales."""


class KVCachePool:
    """Per-layer caches ``[num_pages, 2, page_size, num_kv_heads, head_dim]`` (NHD; [:, 0]
    is K, [:, 1] is V), the layout FlashInfer's paged wrappers take as one tensor.

    ``dtype`` float8_e4m3fn stores fp8 K/V with one float32 scale per (token, kv head):
    ``scales[layer]`` is ``[num_pages, 2, page_size, num_kv_heads]``, parallel to the cache
    without its head_dim axis, and a stored vector dequantizes as ``fp8 * scale`` with
    ``scale = amax(|x|) / 448`` over its head_dim values. Per-token scales are set when the
    token is written, so no calibration is needed and one outlier token or head does not
    flatten the resolution of the others; they cost 4 bytes per head_dim bytes (6 % at
    head_dim 64). NOTE: FlashInfer's fp8 paged kernels take one k_scale/v_scale per tensor,
    so a GPU backend reading this pool must dequantize with these scales itself. On the
    CPU's native route torch_ref stores and attends in place (store_kv_fp8 and
    decode_attention with kv_scales in toolkit/kernels/cpu/ops.cpp): a 64-stream w8a8 decode
    step of SmolLM2 took 41 ms against 39 ms over bfloat16 (the byte-to-float conversion
    costs what the halved reads save on 2 AMD EPYC cores); the torch route's gather and
    dequantization took 110 ms.
    For any other dtype ``scales`` is None and values are stored as given.
    """

    def __init__(self, num_layers: int, num_pages: int, page_size: int, num_kv_heads: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self.num_pages = num_pages
        self.page_size = page_size
        self.dtype = dtype
        shape = (num_pages, 2, page_size, num_kv_heads, head_dim)
        self.caches = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.scales: list[torch.Tensor] | None = None
        if dtype in FP8_KV_DTYPES:
            self.scales = [torch.zeros(shape[:-1], dtype=SCALE_DTYPE, device=device)
                           for _ in range(num_layers)]

    @property
    def quantized(self) -> bool:
        """True when the pages hold fp8 values with scales."""
        return self.scales is not None

    @staticmethod
    def bytes_per_page(num_layers: int, page_size: int, num_kv_heads: int, head_dim: int,
                       dtype: torch.dtype) -> int:
        """Bytes one page takes over all layers, scales included."""
        per_vector = head_dim * torch.empty((), dtype=dtype).element_size()
        if dtype in FP8_KV_DTYPES:
            per_vector += torch.empty((), dtype=SCALE_DTYPE).element_size()
        return num_layers * 2 * page_size * num_kv_heads * per_vector

    def write(self, layer_id: int, slot_mapping: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor) -> None:
        """Store k, v [T, H_kv, D] at slots [T] (slot = page * page_size + offset)."""
        cache = self.caches[layer_id]
        pages = torch.div(slot_mapping, self.page_size, rounding_mode="floor")
        offsets = slot_mapping % self.page_size
        if self.scales is None:
            cache[pages, 0, offsets] = k.to(cache.dtype)
            cache[pages, 1, offsets] = v.to(cache.dtype)
            return
        scales = self.scales[layer_id]
        for kv, x in ((0, k), (1, v)):
            values, x_scales = quantize_kv(x, cache.dtype)
            cache[pages, kv, offsets] = values
            scales[pages, kv, offsets] = x_scales

    def read(self, layer_id: int, slot_mapping: torch.Tensor,
             dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v [T, H_kv, D] in ``dtype`` at slots [T] (dequantized for fp8 pages)."""
        cache = self.caches[layer_id]
        pages = torch.div(slot_mapping, self.page_size, rounding_mode="floor")
        offsets = slot_mapping % self.page_size
        if self.scales is None:
            return cache[pages, 0, offsets].to(dtype), cache[pages, 1, offsets].to(dtype)
        scales = self.scales[layer_id]
        return tuple(dequantize_kv(cache[pages, kv, offsets], scales[pages, kv, offsets], dtype)
                     for kv in (0, 1))


def quantize_kv(x: torch.Tensor,
                dtype: torch.dtype = torch.float8_e4m3fn) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (fp8 values [..., D], float32 scales [...]) with x ~= values * scale.

    One scale per vector (amax / 448); all-zero vectors get scale 0 and zero values."""
    x = x.float()
    amax = x.abs().amax(dim=-1, keepdim=True)  # [..., 1]
    scales = amax / FP8_MAX
    inverse = torch.where(amax > 0, FP8_MAX / amax, 0.0)
    values = (x * inverse).clamp_(-FP8_MAX, FP8_MAX).to(dtype)
    return values, scales.squeeze(-1)


def dequantize_kv(values: torch.Tensor, scales: torch.Tensor,
                  dtype: torch.dtype) -> torch.Tensor:
    """fp8 values [..., D] and scales [...] -> values * scale [..., D] in ``dtype``, with the
    scale rounded to ``dtype`` first (for float16 scales below its normal range: to the
    precision of scale * 2^8). bfloat16/float16 take the bit-cast route of
    toolkit.quant.fp8 (the same result, several times faster than ``Tensor.to``)."""
    if dtype in BIT_CAST_FACTORS:
        factor = BIT_CAST_FACTORS[dtype]
        # NOTE: the clamp keeps scale * factor finite (bf16 K/V with amax above ~1e5)
        scaled = (scales * factor).clamp_(max=torch.finfo(dtype).max).to(dtype)
        return fp8_bits_as(values, dtype).mul_(scaled.unsqueeze(-1))
    return values.to(dtype).mul_(scales.unsqueeze(-1).to(dtype))
